//! The dependencies a daemon runs on, built once: `filesync-server` opens one
//! database pool (one SQLite writer lock), one chunk store and one bus and
//! gives the same [`Services`] to its API and its node; a daemon on its own
//! builds them from its configuration.

use anyhow::Context;
use filesync_core::config::Config;
use filesync_core::db::Db;
use filesync_core::storage::{self, ChunkStore};

use crate::Bus;

/// What a daemon's `run` is given: the configuration and, optionally, parts
/// already built; [`Deps::open`] builds the missing ones from the configuration.
/// `From<Config>` keeps `run(listener, config, shutdown)` working.
#[derive(Debug)]
pub struct Deps {
    pub config: Config,
    pub db: Option<Db>,
    pub store: Option<ChunkStore>,
    pub bus: Option<Bus>,
}

/// Every dependency, built. Cheap to clone: clones share the pool, the store and the bus.
#[derive(Debug, Clone)]
pub struct Services {
    /// Prepared for serving (the JWT secret is loaded or generated).
    pub config: Config,
    pub db: Db,
    pub store: ChunkStore,
    pub bus: Bus,
}

impl From<Config> for Deps {
    fn from(config: Config) -> Deps {
        Deps { config, db: None, store: None, bus: None }
    }
}

impl From<Services> for Deps {
    fn from(s: Services) -> Deps {
        Deps { config: s.config, db: Some(s.db), store: Some(s.store), bus: Some(s.bus) }
    }
}

impl Deps {
    pub fn with_db(mut self, db: Db) -> Deps {
        self.db = Some(db);
        self
    }

    pub fn with_store(mut self, store: ChunkStore) -> Deps {
        self.store = Some(store);
        self
    }

    pub fn with_bus(mut self, bus: Bus) -> Deps {
        self.bus = Some(bus);
        self
    }

    /// Prepares the configuration for serving, then opens (and migrates) the
    /// database, opens the chunk store and starts the bus, for each part not
    /// given. Blocking work runs on the blocking pool; must run inside tokio.
    pub async fn open(self) -> anyhow::Result<Services> {
        let Deps { mut config, db, store, bus } = self;
        config.prepare_for_serving()?;
        let db = match db {
            Some(db) => db,
            None => {
                let (url, pool) = (config.database_url(), config.db_pool_size);
                tokio::task::spawn_blocking(move || Db::open(&url, pool)).await?.context("opening the database")?
            }
        };
        let store = match store {
            Some(store) => store,
            None => storage::open(&config, db.clone()).await.context("opening the chunk store")?,
        };
        let bus = match bus {
            Some(bus) => bus,
            None => Bus::from_config(&config)?,
        };
        Ok(Services { config, db, store, bus })
    }
}
