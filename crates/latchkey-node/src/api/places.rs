//! Places for requests in flight: a pool with a cap per client address. The node keeps two:
//! one for ordinary requests and one for long polls (mailbox reads with `wait_secs` > 0). A
//! long poll holds its request for up to 30 s, so if long polls shared the places of ordinary
//! requests, one address opening enough of them would leave none for op posts and chain reads;
//! with a pool of their own they cannot, and the cap per address keeps one address from taking
//! a whole pool (of long polls, or of ordinary requests held open by a slow body).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// This address holds its maximum of places.
    Address,
    /// The pool is full.
    Pool,
}

#[derive(Debug)]
pub struct Places {
    pool: Arc<Semaphore>,
    per_address: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
    /// Places held now (a gauge the metrics show).
    in_use: Arc<AtomicU64>,
}

/// One request's place; freed when dropped (the request ended, however it ended).
#[derive(Debug)]
pub struct Place {
    places: Arc<Places>,
    address: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self.places.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.address);
            }
        }
        self.places.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Places {
    pub fn new(pool: usize, per_address: usize, in_use: Arc<AtomicU64>) -> Self {
        Places {
            pool: Arc::new(Semaphore::new(pool.max(1))),
            per_address: per_address.max(1),
            held: Mutex::new(HashMap::new()),
            in_use,
        }
    }

    /// Takes a place for `address`, or says why there is none. Never waits.
    pub fn enter(self: &Arc<Self>, address: IpAddr) -> Result<Place, Busy> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.get(&address).copied().unwrap_or(0);
        if mine >= self.per_address {
            return Err(Busy::Address);
        }
        let permit = self
            .pool
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy::Pool)?;
        held.insert(address, mine + 1);
        self.in_use.fetch_add(1, Ordering::Relaxed);
        Ok(Place {
            places: self.clone(),
            address,
            _permit: permit,
        })
    }

    pub fn per_address(&self) -> usize {
        self.per_address
    }
}
