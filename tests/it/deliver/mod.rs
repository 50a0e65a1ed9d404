//! Delivery: Maildir, mbox, MDAs (procmail, maildrop, dovecot-lda) and the SMTP relay, and what a
//! refused or failed delivery does.

mod deliver_mda;
mod deliver_smtp;
pub mod issue13_edge;
mod issue13_mda;
mod mbox_peer;
mod policy;
