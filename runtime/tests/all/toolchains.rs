//! Components from the toolchains apps are really written with load and run:
//! componentize-py and componentize-js output imports wasi:filesystem (and
//! more of wasi:cli than Rust's std), which must be linked and harmless.

use crate::common::*;
use switchyard_runtime::LimitsOverride;
use switchyard_test_artifacts as artifacts;

fn imports(component: &[u8], interface: &str) -> bool {
    component
        .windows(interface.len())
        .any(|w| w == interface.as_bytes())
}

#[tokio::test]
async fn a_componentize_py_component_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let python = artifacts::read(artifacts::PYTHON);
    assert!(imports(&python, "wasi:filesystem/preopens"));
    let app = deploy(&runtime, &python, "python", LimitsOverride::default()).await;
    for visits in 1..=2 {
        let reply = get(&app, "/from/python?x=1").await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.text(),
            format!("python saw /from/python?x=1; visits={visits}; files=refused\n")
        );
    }
}

#[tokio::test]
async fn a_componentize_js_component_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let javascript = artifacts::read(artifacts::JAVASCRIPT);
    assert!(imports(&javascript, "wasi:filesystem/preopens"));
    let app = deploy(
        &runtime,
        &javascript,
        "javascript",
        LimitsOverride::default(),
    )
    .await;
    for visits in 1..=2 {
        let reply = get(&app, "/from/js").await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.text(),
            format!("javascript saw /from/js; visits={visits}\n")
        );
    }
}
