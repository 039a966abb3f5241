//! Object stores for a cluster's processes: the local file system, and an S3 store made on
//! first use for any bucket a plan reads or writes, configured as TADS configures S3 (the
//! `AWS_*` environment), so executors need no per-bucket set-up.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use url::Url;

/// Object stores by `scheme://host`, made on first use.
#[derive(Debug, Default)]
pub struct TadsStores {
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

fn key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
}

impl ObjectStoreRegistry for TadsStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores.write().ok()?.insert(key(url), store)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let k = key(url);
        if let Some(s) = self.stores.read().ok().and_then(|m| m.get(&k).cloned()) {
            return Ok(s);
        }
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => Arc::new(LocalFileSystem::new()),
            "s3" | "s3a" => {
                let bucket = url.host_str().unwrap_or_default();
                let location = tads_store::Location::parse(&format!("s3://{bucket}/"))
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                Arc::clone(location.store())
            }
            other => {
                return Err(DataFusionError::Configuration(format!(
                    "{url}: no object store for `{other}://` on this TADS cluster process (local paths and s3:// are supported)"
                )));
            }
        };
        if let Ok(mut m) = self.stores.write() {
            m.insert(k, Arc::clone(&store));
        }
        Ok(store)
    }
}
