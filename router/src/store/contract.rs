//! The behaviour every [`ControlStore`] must have. Uses project ids of its
//! own, so it can run against a shared store.

use super::{
    ApiKeyRecord, CertificateRecord, Change, ControlStore, EnvVar, KeyKind, ProjectSettings,
    StoreError, TokenRecord, now_ms,
};
use crate::build::{BuildManifest, BuildRecord, new_build_id};
use crate::hostname::Hostname;
use switchyard_runtime::{BuildId, ComponentId, LimitsOverride, ProjectId};

/// Runs the whole contract against `store`.
pub(crate) async fn control_store_contract(store: &dyn ControlStore) {
    projects_and_settings(store).await;
    hostnames_route_exactly_or_by_wildcard(store).await;
    builds_commit_activate_and_prune(store).await;
    deploy_leases_exclude_each_other(store).await;
    object_writes_and_collection_exclude_each_other(store).await;
    tokens_and_certificates(store).await;
    changes_are_announced(store).await;
}

fn fresh(tag: &str) -> ProjectId {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    ProjectId::new(&format!("c-{tag}-{nanos:x}")).expect("valid id")
}

fn host(name: &str) -> Hostname {
    Hostname::parse(name).expect("valid hostname")
}

fn build(project: &ProjectId, asset_hash: &str) -> BuildRecord {
    let mut manifest = BuildManifest::default();
    manifest.assets.insert(
        "/index.html".into(),
        crate::build::Asset {
            hash: asset_hash.into(),
            size: 1,
            content_type: "text/html".into(),
            encodings: Vec::new(),
        },
    );
    BuildRecord {
        id: new_build_id(),
        project: project.clone(),
        created_at: now_ms(),
        component: Some(ComponentId::of(asset_hash.as_bytes())),
        manifest,
    }
}

async fn projects_and_settings(store: &dyn ControlStore) {
    let id = fresh("proj");
    let created = store.create_project(&id).await.unwrap();
    assert_eq!(
        (created.suspended, created.active_build.clone()),
        (false, None)
    );
    assert!(matches!(
        store.create_project(&id).await,
        Err(StoreError::Conflict {
            code: "PROJECT_EXISTS",
            ..
        })
    ));

    store.set_suspended(&id, true).await.unwrap();
    let vars = [
        EnvVar {
            name: "A".into(),
            value: "1".into(),
            secret: false,
        },
        EnvVar {
            name: "TOKEN".into(),
            value: "s3cr3t".into(),
            secret: true,
        },
    ];
    store.set_env(&id, &vars).await.unwrap();
    store
        .set_env(
            &id,
            &[EnvVar {
                name: "A".into(),
                value: "2".into(),
                secret: false,
            }],
        )
        .await
        .unwrap();
    let settings = ProjectSettings {
        sandbox: LimitsOverride {
            wall_clock_ms: Some(500),
            ..LimitsOverride::default()
        },
        requests_per_minute: Some(60),
        burst: Some(5),
        daily_requests: Some(1000),
        cors_origins: vec!["https://app.example.com".into()],
    };
    store.set_settings(&id, &settings).await.unwrap();

    let project = store.project(&id).await.unwrap().unwrap();
    assert!(project.suspended);
    assert_eq!(project.env.len(), 2);
    assert_eq!(project.env[0].value, "2");
    assert!(project.env[1].secret);
    assert_eq!(project.settings, settings);
    assert!(store.unset_env(&id, "A").await.unwrap());
    assert!(!store.unset_env(&id, "A").await.unwrap());

    let missing = fresh("missing");
    assert!(store.project(&missing).await.unwrap().is_none());
    assert!(matches!(
        store.set_suspended(&missing, true).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.set_env(&missing, &vars).await,
        Err(StoreError::NotFound)
    ));

    // Paging visits every project once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.projects(cursor.as_deref(), 2).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|p| p.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.iter().filter(|p| **p == id).count(), 1);

    assert!(store.delete_project(&id).await.unwrap());
    assert!(store.project(&id).await.unwrap().is_none());
    assert!(!store.delete_project(&id).await.unwrap());
}

async fn hostnames_route_exactly_or_by_wildcard(store: &dyn ControlStore) {
    let a = fresh("host-a");
    let b = fresh("host-b");
    store.create_project(&a).await.unwrap();
    store.create_project(&b).await.unwrap();
    let suffix = a.as_str();
    let exact = host(&format!("shop.{suffix}.example"));
    let wildcard = host(&format!("*.{suffix}.example"));
    store.add_hostname(&a, &exact).await.unwrap();
    store.add_hostname(&b, &wildcard).await.unwrap();

    assert!(matches!(
        store.add_hostname(&b, &exact).await,
        Err(StoreError::Conflict {
            code: "HOSTNAME_TAKEN",
            ..
        })
    ));
    assert_eq!(
        store.resolve_hostname(exact.as_str()).await.unwrap(),
        Some(a.clone())
    );
    let other = format!("blog.{suffix}.example");
    assert_eq!(
        store.resolve_hostname(&other).await.unwrap(),
        Some(b.clone())
    );
    // A wildcard covers one label, not deeper names or the bare domain.
    assert_eq!(
        store
            .resolve_hostname(&format!("x.blog.{suffix}.example"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .resolve_hostname(&format!("{suffix}.example"))
            .await
            .unwrap(),
        None
    );

    assert_eq!(store.hostnames(&a).await.unwrap().len(), 1);
    assert!(
        !store.remove_hostname(&b, &exact).await.unwrap(),
        "not b's to remove"
    );
    assert!(store.remove_hostname(&a, &exact).await.unwrap());
    assert_eq!(
        store.resolve_hostname(exact.as_str()).await.unwrap(),
        Some(b.clone()),
        "the wildcard still covers it"
    );

    store.delete_project(&b).await.unwrap();
    assert_eq!(
        store.resolve_hostname(&other).await.unwrap(),
        None,
        "deleting a project frees its hostnames"
    );
    store.delete_project(&a).await.unwrap();
}

async fn builds_commit_activate_and_prune(store: &dyn ControlStore) {
    let id = fresh("builds");
    store.create_project(&id).await.unwrap();
    let mut ids = Vec::new();
    store.begin_deploy(&id, "node-a:1", 60_000).await.unwrap();
    for n in 0..4 {
        let build = build(&id, &format!("{n:064x}"));
        store.commit_build(&build, "node-a:1").await.unwrap();
        assert_eq!(
            store.project(&id).await.unwrap().unwrap().active_build,
            Some(build.id.clone())
        );
        assert_eq!(
            store.build(&id, &build.id).await.unwrap(),
            Some(build.clone())
        );
        ids.push(build.id);
    }

    // Only the lease's holder commits.
    let late = build(&id, &format!("{:064x}", 9));
    for holder in ["node-b:1", ""] {
        assert!(matches!(
            store.commit_build(&late, holder).await,
            Err(StoreError::Conflict {
                code: "DEPLOY_LEASE_LOST",
                ..
            })
        ));
    }
    store.end_deploy(&id, "node-a:1").await.unwrap();
    assert!(store.commit_build(&late, "node-a:1").await.is_err());
    assert_eq!(store.build(&id, &late.id).await.unwrap(), None);

    let page = store.builds(&id, None, 3).await.unwrap();
    let newest: Vec<_> = page.items.iter().map(|b| b.id.clone()).collect();
    assert_eq!(newest, [ids[3].clone(), ids[2].clone(), ids[1].clone()]);
    let rest = store.builds(&id, page.next.as_deref(), 3).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next, None);

    // Roll back to the oldest, then prune to two: the active one survives.
    store.activate_build(&id, &ids[0]).await.unwrap();
    let missing = BuildId::new("nope").unwrap();
    assert!(matches!(
        store.activate_build(&id, &missing).await,
        Err(StoreError::NotFound)
    ));
    let pruned = store.prune_builds(&id, 2).await.unwrap();
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0].id, ids[1]);
    assert!(store.build(&id, &ids[0]).await.unwrap().is_some());

    let referenced = store.referenced_objects().await.unwrap();
    assert!(referenced.contains(&format!("{:064x}", 0)));
    assert!(
        !referenced.contains(&format!("{:064x}", 1)),
        "pruned builds are not referenced"
    );
    assert!(referenced.contains(ComponentId::of(format!("{:064x}", 3).as_bytes()).as_str()));
    store.delete_project(&id).await.unwrap();
}

async fn deploy_leases_exclude_each_other(store: &dyn ControlStore) {
    let id = fresh("lease");
    store.create_project(&id).await.unwrap();
    store.begin_deploy(&id, "node-a:1", 60_000).await.unwrap();
    assert!(matches!(
        store.begin_deploy(&id, "node-b:1", 60_000).await,
        Err(StoreError::Conflict {
            code: "DEPLOY_IN_PROGRESS",
            ..
        })
    ));
    store.end_deploy(&id, "node-b:1").await.unwrap();
    assert!(
        store.begin_deploy(&id, "node-b:2", 60_000).await.is_err(),
        "only the holder releases"
    );
    store.end_deploy(&id, "node-a:1").await.unwrap();
    store.begin_deploy(&id, "node-b:2", 60_000).await.unwrap();
    // A restarted node clears its own leases only.
    store.release_deploys("node-a:").await.unwrap();
    assert!(store.begin_deploy(&id, "node-a:3", 60_000).await.is_err());
    store.release_deploys("node-b:").await.unwrap();
    // An expired lease does not block.
    store.begin_deploy(&id, "node-c:1", -1).await.unwrap();
    store.begin_deploy(&id, "node-d:1", 60_000).await.unwrap();
    store.delete_project(&id).await.unwrap();
}

fn conflict_code(result: Result<(), StoreError>) -> Option<&'static str> {
    match result {
        Err(StoreError::Conflict { code, .. }) => Some(code),
        _ => None,
    }
}

async fn object_writes_and_collection_exclude_each_other(store: &dyn ControlStore) {
    // Writers share the objects with each other, not with a collection.
    store
        .begin_object_writes("node-a:w1", 60_000)
        .await
        .unwrap();
    store
        .begin_object_writes("node-b:w1", 60_000)
        .await
        .unwrap();
    assert_eq!(
        conflict_code(store.begin_collection("node-a:gc", 60_000).await),
        Some("OBJECT_WRITES_IN_PROGRESS")
    );
    store.end_object_writes("node-a:w1").await.unwrap();
    assert_eq!(
        conflict_code(store.begin_collection("node-a:gc", 60_000).await),
        Some("OBJECT_WRITES_IN_PROGRESS"),
        "every writer must be gone"
    );
    store.end_object_writes("node-b:w1").await.unwrap();

    store.begin_collection("node-a:gc", 60_000).await.unwrap();
    assert_eq!(
        conflict_code(store.begin_object_writes("node-b:w2", 60_000).await),
        Some("COLLECTION_IN_PROGRESS")
    );
    assert_eq!(
        conflict_code(store.begin_collection("node-b:gc", 60_000).await),
        Some("COLLECTION_IN_PROGRESS")
    );
    // Only the holder ends it; the holder may renew it.
    store.end_collection("node-b:gc").await.unwrap();
    store.begin_collection("node-a:gc", 60_000).await.unwrap();
    store.end_collection("node-a:gc").await.unwrap();
    store
        .begin_object_writes("node-b:w2", 60_000)
        .await
        .unwrap();
    store.end_object_writes("node-b:w2").await.unwrap();

    // A restarted node clears its own writers and collection, not others'.
    store
        .begin_object_writes("node-a:w3", 60_000)
        .await
        .unwrap();
    store
        .begin_object_writes("node-b:w3", 60_000)
        .await
        .unwrap();
    store.release_deploys("node-a:").await.unwrap();
    assert!(store.begin_collection("node-c:gc", 60_000).await.is_err());
    store.release_deploys("node-b:").await.unwrap();
    store.begin_collection("node-c:gc", 60_000).await.unwrap();
    store.release_deploys("node-c:").await.unwrap();

    // Expired registrations block nothing.
    store.begin_object_writes("node-d:w1", 1).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store.begin_collection("node-e:gc", 1).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store
        .begin_object_writes("node-d:w2", 60_000)
        .await
        .unwrap();
    store.end_object_writes("node-d:w2").await.unwrap();
}

async fn tokens_and_certificates(store: &dyn ControlStore) {
    let id = fresh("tokens");
    store.create_project(&id).await.unwrap();
    let token = TokenRecord {
        id: format!("t{}", id.as_str()),
        project: id.clone(),
        name: "ci".into(),
        secret_hash: "ab".repeat(32),
        created_at: now_ms(),
    };
    store.create_token(&token).await.unwrap();
    assert_eq!(store.token(&token.id).await.unwrap(), Some(token.clone()));
    assert_eq!(
        store.tokens(&id).await.unwrap(),
        std::slice::from_ref(&token)
    );
    let other = fresh("other");
    store.create_project(&other).await.unwrap();
    assert!(
        !store.revoke_token(&other, &token.id).await.unwrap(),
        "scoped to its project"
    );
    assert!(store.revoke_token(&id, &token.id).await.unwrap());
    assert_eq!(store.token(&token.id).await.unwrap(), None);

    let key = ApiKeyRecord {
        id: format!("k{}", id.as_str()),
        project: id.clone(),
        kind: KeyKind::Public,
        name: "web".into(),
        secret_hash: "cd".repeat(32),
        created_at: now_ms(),
    };
    let server_key = ApiKeyRecord {
        id: format!("s{}", id.as_str()),
        kind: KeyKind::Server,
        ..key.clone()
    };
    store.create_api_key(&key).await.unwrap();
    store.create_api_key(&server_key).await.unwrap();
    assert_eq!(store.api_key(&key.id).await.unwrap(), Some(key.clone()));
    assert_eq!(
        store.api_key(&server_key.id).await.unwrap().unwrap().kind,
        KeyKind::Server
    );
    assert_eq!(store.api_keys(&id).await.unwrap().len(), 2);
    assert_eq!(
        store.token(&key.id).await.unwrap(),
        None,
        "keys are not deploy tokens"
    );
    assert!(
        !store.revoke_api_key(&other, &key.id).await.unwrap(),
        "scoped to its project"
    );
    assert!(store.revoke_api_key(&id, &key.id).await.unwrap());
    assert_eq!(store.api_key(&key.id).await.unwrap(), None);
    assert_eq!(
        store.api_keys(&id).await.unwrap(),
        std::slice::from_ref(&server_key)
    );

    let name = host(&format!("{}.certs.example", id.as_str()));
    let cert = CertificateRecord {
        hostname: name.clone(),
        cert_pem: "cert".into(),
        key_pem: "key".into(),
        created_at: now_ms(),
    };
    store.put_certificate(&cert).await.unwrap();
    let replaced = CertificateRecord {
        cert_pem: "cert2".into(),
        ..cert
    };
    store.put_certificate(&replaced).await.unwrap();
    let all = store.certificates().await.unwrap();
    assert_eq!(all.iter().filter(|c| c.hostname == name).count(), 1);
    assert!(all.contains(&replaced));
    assert!(store.delete_certificate(&name).await.unwrap());
    assert!(!store.delete_certificate(&name).await.unwrap());
    store.delete_project(&id).await.unwrap();
    store.delete_project(&other).await.unwrap();
}

async fn changes_are_announced(store: &dyn ControlStore) {
    let mut changes = store.subscribe();
    let id = fresh("changes");
    store.create_project(&id).await.unwrap();
    store.set_suspended(&id, true).await.unwrap();
    store
        .put_certificate(&CertificateRecord {
            hostname: host(&format!("{}.example", id.as_str())),
            cert_pem: String::new(),
            key_pem: String::new(),
            created_at: 0,
        })
        .await
        .unwrap();
    // A shared store delivers its announcements a moment later.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while !(seen.contains(&Change::Project(id.clone())) && seen.contains(&Change::Certificates)) {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Ok(Ok(change)) => seen.push(change),
            other => panic!("announcements missing after 2 s ({other:?}); saw {seen:?}"),
        }
    }
    store.delete_project(&id).await.unwrap();
}
