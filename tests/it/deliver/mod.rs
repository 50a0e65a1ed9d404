//! Delivery: Maildir, mbox, MDAs (procmail, maildrop, dovecot-lda), the SMTP relay and LMTP, and what a
//! refused or failed delivery does.

mod deliver_mda;
mod deliver_smtp;
pub mod issue13_edge;
mod issue13_mda;
mod lmtp;
mod mbox_peer;
mod policy;
mod route;
