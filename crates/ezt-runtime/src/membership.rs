//! Cluster membership (issue 13): this node's identity, its lease on the `nodes` table, the
//! self-fence, lane placement and the sweeper that adopts dead nodes' lanes.
//!
//! Depends on `fence` and the store; never on `lanes` (the lanes learn what they own from the
//! commands it sends through their handle's seam in `lib.rs`).

use std::path::Path;

use ezt_store::NodeId;

use crate::config::{valid_node_id, Config};

/// The name of the file in the data dir that keeps a node's id across restarts.
pub const NODE_ID_FILE: &str = "node_id";

/// This node's id: on one node (SQLite) the shared local holder; in a cluster the configured
/// `node_id`, else the one kept in the data dir (made at random on first start). The data dir's
/// lock file guarantees that no other live process uses the same kept id, which is what makes
/// recovering this id's leases at start safe.
pub fn node_id(cfg: &Config) -> std::io::Result<NodeId> {
    if !cfg.clustered() {
        return Ok(NodeId::local());
    }
    if let Some(id) = &cfg.node_id {
        return Ok(NodeId::new(id.as_str()));
    }
    kept_or_new(&cfg.data_dir).map(NodeId::new)
}

fn kept_or_new(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if valid_node_id(s.trim()) => return Ok(s.trim().to_string()),
        Ok(s) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: {:?} is not a node id (1-64 of letters, digits, - _ .)",
                    path.display(),
                    s.trim()
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!("n-{:012x}", rand::random::<u64>() >> 16);
    let tmp = dir.join(format!("{NODE_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_its_id_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: dir.path().to_path_buf(),
            database_url: Some(crate::config::SecretKey("postgres://x@h/db".into())),
            ..Config::default()
        };
        let a = node_id(&cfg).unwrap();
        assert!(a.as_str().starts_with("n-"), "{a}");
        assert_eq!(node_id(&cfg).unwrap(), a, "kept across restarts");
        let named = Config {
            node_id: Some("east-1".into()),
            ..cfg.clone()
        };
        assert_eq!(node_id(&named).unwrap().as_str(), "east-1");
        std::fs::write(dir.path().join(NODE_ID_FILE), "no spaces allowed").unwrap();
        let e = node_id(&cfg).unwrap_err();
        assert!(e.to_string().contains("not a node id"), "{e}");
        let single = Config {
            database_url: None,
            ..cfg
        };
        assert_eq!(node_id(&single).unwrap(), NodeId::local());
    }
}
