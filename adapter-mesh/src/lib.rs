mod fsutil;
mod log_store;
mod raft_types;
mod sm_store;
pub mod state;
#[cfg(test)]
mod storage_tests;
