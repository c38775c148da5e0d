//! The Redis driver against a real Redis ($SKEIN_TEST_REDIS_URL, default the local one
//! CI starts): what it counts as undelivered is exactly what did not reach the nodes a
//! message was for.

use std::sync::Arc;
use std::time::Duration;

use skein_adapter_redis::driver::{Driver, Reach};
use skein_adapter_redis::RedisDriver;
use tokio::sync::mpsc;

fn url() -> String {
    std::env::var("SKEIN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(tokio::time::Instant::now() < end, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_message_to_one_node_counts_one_delivery() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let key = format!("driver-test-{:x}", rand::random::<u64>());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let on_b = Arc::new(move |c: &str, p: &[u8]| {
            let _ = tx.send((c.to_owned(), p.to_vec()));
        });
        // Two nodes: each has one peer.
        let b = RedisDriver::connect(&url(), on_b, Arc::new(|| 1))
            .await
            .unwrap();
        let a = RedisDriver::connect(&url(), Arc::new(|_: &str, _: &[u8]| {}), Arc::new(|| 1))
            .await
            .unwrap();
        until("both subscribers attached", || {
            !a.health.is_down() && !b.health.is_down()
        })
        .await;
        let b_channel = format!("{key}#node#b#");
        b.subscribe(vec![b_channel.clone()], vec![]).await.unwrap();
        let lost = || {
            a.health
                .undelivered
                .load(std::sync::atomic::Ordering::Relaxed)
        };

        // B's own channel: it reaches B, the one node it was for; nothing is lost.
        a.publish_to(b_channel.clone(), b"hi".to_vec(), Reach::One);
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(got.unwrap(), Some((b_channel, b"hi".to_vec())));
        // The count is settled once the transaction's answer is read; a probe message
        // sent after it is answered after it.
        a.publish_to(format!("{key}#probe"), vec![], Reach::Uncounted);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(lost(), 0, "a message to one node is owed to that node only");

        // A node that is not there: one delivery lost, not one per live node.
        a.publish_to(format!("{key}#node#gone#"), b"x".to_vec(), Reach::One);
        until("the lost delivery counted", || lost() == 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(lost(), 1);
    })
    .await
    .expect("within the time bound");
}
