//! Durability: SIGKILL at random instants, recovery of pending deliveries, a full disk, and the
//! state directory's ownership and identity rules.

mod compaction;
mod crash;
mod full_disk;
mod issue13_state;
mod recovery;
mod writeback_error;
