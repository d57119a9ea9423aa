//! What `Runtime::compile` and `Runtime::app` refuse, and how compiled
//! artifacts are reused.

use crate::common::*;
use switchyard_runtime::{ComponentId, LimitsOverride, LoadError, RuntimeConfig};
use switchyard_test_artifacts as artifacts;

async fn refuse(bytes: &[u8]) -> LoadError {
    let dir = tempfile::tempdir().unwrap();
    runtime(dir.path())
        .compile(bytes)
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn a_core_module_is_refused() {
    let err = refuse(&artifacts::wat("core-module", &[])).await;
    assert!(matches!(err, LoadError::CoreModule), "{err:?}");
    assert_eq!(err.code(), "COMPONENT_INVALID");
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component")
    );
    assert!(err.is_client_error());
}

#[tokio::test]
async fn an_unknown_import_is_refused_by_name() {
    let err = refuse(&artifacts::wat("unknown-import", &[])).await;
    assert_eq!(err.code(), "COMPONENT_IMPORT_NOT_ALLOWED");
    assert_eq!(
        err.to_string(),
        "the component imports `acme:secrets/vault@1.0.0`, which Switchyard does not provide"
    );
}

#[tokio::test]
async fn an_allowed_import_with_the_wrong_type_is_refused() {
    let err = refuse(&artifacts::wat("mistyped-import", &[])).await;
    assert_eq!(err.code(), "COMPONENT_LINK_FAILED", "{err}");
    assert!(err.to_string().contains("get-secrets"), "{err}");
}

#[tokio::test]
async fn a_component_without_an_http_handler_is_refused() {
    let err = refuse(&artifacts::wat("no-handler", &[])).await;
    assert_eq!(err.code(), "COMPONENT_NO_HANDLER", "{err}");
}

#[tokio::test]
async fn garbage_and_oversized_components_are_refused() {
    assert!(matches!(
        refuse(b"\x7fELF not wasm").await,
        LoadError::NotWasm
    ));
    let mut truncated = artifacts::read(artifacts::HELLO);
    truncated.truncate(truncated.len() / 2);
    assert_eq!(refuse(&truncated).await.code(), "COMPONENT_INVALID");

    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        max_component_bytes: 1000,
        ..config(dir.path())
    };
    let err = runtime_with(config, dir.path())
        .compile(&artifacts::read(artifacts::HELLO))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "COMPONENT_TOO_LARGE");
}

#[tokio::test]
async fn compiling_once_then_loading_is_a_deserialize() {
    let dir = tempfile::tempdir().unwrap();
    let hello = artifacts::read(artifacts::HELLO);
    let id = {
        let runtime = runtime(dir.path());
        let id = runtime.compile(&hello).await.unwrap();
        assert_eq!(id, ComponentId::of(&hello));
        assert_eq!(
            runtime.compile(&hello).await.unwrap(),
            id,
            "same bytes, same id"
        );
        assert_eq!(runtime.stats().compiled, 1, "compiled once");
        assert!(runtime.is_compiled(&id));
        id
    };
    // After a restart: compiling the same bytes again is a load.
    let runtime = runtime(dir.path());
    runtime.compile(&hello).await.unwrap();
    let app = runtime.app(&spec("reload", id)).await.unwrap();
    assert_eq!(get(&app, "/").await.unwrap().status, 200);
    let stats = runtime.stats();
    assert_eq!((stats.compiled, stats.deserialized), (0, 1), "{stats:?}");
}

#[tokio::test]
async fn apps_need_a_compiled_component_and_valid_settings() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let missing = runtime
        .app(&spec("nothing", ComponentId::of(b"never compiled")))
        .await;
    assert_eq!(missing.err().unwrap().code(), "ARTIFACT_MISSING");

    let id = runtime
        .compile(&artifacts::read(artifacts::HELLO))
        .await
        .unwrap();
    let mut reserved = spec("reserved", id.clone());
    reserved.env = vec![("SWITCHYARD_PROJECT".into(), "someone-else".into())];
    assert_eq!(
        runtime.app(&reserved).await.err().unwrap().code(),
        "INVALID_APP_SPEC"
    );

    let mut too_much = spec("greedy", id);
    too_much.limits = LimitsOverride {
        memory_bytes: Some(1 << 40),
        ..LimitsOverride::default()
    };
    let err = runtime.app(&too_much).await.err().unwrap();
    assert_eq!(err.code(), "INVALID_APP_SPEC");
    assert!(err.to_string().contains("memory_bytes"), "{err}");
}

#[tokio::test]
async fn invalidate_picks_up_new_settings() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let id = runtime
        .compile(&artifacts::read(artifacts::HOSTILE))
        .await
        .unwrap();
    let mut spec = spec("settings", id);
    spec.env = vec![("COLOUR".into(), "red".into())];
    let app = runtime.app(&spec).await.unwrap();
    assert_eq!(get(&app, "/env").await.unwrap().json()["COLOUR"], "red");

    spec.env = vec![("COLOUR".into(), "blue".into())];
    let cached = runtime.app(&spec).await.unwrap();
    assert_eq!(
        get(&cached, "/env").await.unwrap().json()["COLOUR"],
        "red",
        "builds are immutable"
    );
    runtime.invalidate(&spec.project);
    let fresh = runtime.app(&spec).await.unwrap();
    assert_eq!(get(&fresh, "/env").await.unwrap().json()["COLOUR"], "blue");
}
