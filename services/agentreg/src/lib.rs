//! agentreg: GitLab's Kubernetes agent API as a standalone service. `app` implements every
//! operation once; `rest` (GitLab's `/api/v4` paths) and `grpc` (`agentreg.v1`) are two thin
//! edges over it; `startup` wires them to the storage backend (`backends`) and the listeners.

pub mod app;
pub mod backends;
pub mod config;
pub mod grpc;
pub mod metrics;
pub mod rest;
pub mod secrets;
pub mod server;
pub mod snapshots;
pub mod startup;
pub mod telemetry;

/// Checks of the layering that ARCHITECTURE.md promises, on the source itself.
#[cfg(test)]
mod architecture {
    /// Every `.rs` file under `src/<folder>`, with its text.
    fn sources(folder: &str) -> Vec<(std::path::PathBuf, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(folder);
        let mut files = Vec::new();
        let mut pending = vec![root];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{error}")) {
                let path = entry.unwrap_or_else(|error| panic!("{error}")).path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|ext| ext == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
                    files.push((path, text));
                }
            }
        }
        files
    }

    #[test]
    fn the_edges_never_see_a_storage_type() {
        for folder in ["rest", "grpc"] {
            for (path, text) in sources(folder) {
                assert!(
                    !text.contains("agentreg_storage"),
                    "{} imports the storage crate; edges use only app and domain",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn the_app_reaches_storage_only_through_the_port() {
        for (path, text) in sources("app") {
            // Unit tests may build an app over a temporary sled store.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for backend in ["SledStorage", "PostgresStorage", "agentreg_storage::Store"] {
                assert!(
                    !code.contains(backend),
                    "{} names the backend type {backend}",
                    path.display()
                );
            }
        }
    }
}
