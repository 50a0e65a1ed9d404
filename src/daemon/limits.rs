//! How many polls may run at once against one server (host and port): one semaphore per
//! server, made on first use, shared by every account that polls it. The daemon and `fetch`
//! take a server's permit before the global one, so an account waiting for its busy provider
//! holds no slot another provider's account could use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// The per-server semaphores of one config.
#[derive(Debug)]
pub struct ServerLimits {
    limit: usize,
    servers: Mutex<HashMap<(String, u16), Arc<Semaphore>>>,
}

impl ServerLimits {
    pub fn new(limit: usize) -> ServerLimits {
        ServerLimits {
            limit: limit.max(1),
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// The semaphore of `host`:`port` (names compared without regard to case).
    pub fn of(&self, host: &str, port: u16) -> Arc<Semaphore> {
        let mut servers = self
            .servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        servers
            .entry((host.to_ascii_lowercase(), port))
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_semaphore_per_server_whatever_the_case_of_its_name() {
        let l = ServerLimits::new(2);
        let a = l.of("POP.example.org", 995);
        assert!(Arc::ptr_eq(&a, &l.of("pop.example.org", 995)));
        assert!(!Arc::ptr_eq(&a, &l.of("pop.example.org", 110)));
        assert_eq!(a.available_permits(), 2);
        assert_eq!(ServerLimits::new(0).of("h", 1).available_permits(), 1);
    }
}
