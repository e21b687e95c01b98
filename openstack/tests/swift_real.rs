//! Against a real Swift behind a real Keystone (scripts/openstack/swift.sh): upload, list,
//! download; resume after the proxy died mid-upload; 503s retried; a revoked token renewed;
//! changed bytes refused.

#[path = "common/swift_env.rs"]
mod swift_env;

use std::time::Duration;

use cfy_openstack::swift::{self, META_SHA256};
use sha2::Digest;
use swift_env::*;

const MIB: usize = 1024 * 1024;

fn sha256(p: &std::path::Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_download_prune_and_private() {
    let _g = exclusive().await;
    let sw = swift(Duration::from_secs(30));
    let c = container("rt");
    let dir = tempfile::tempdir().unwrap();
    let big = random_file(dir.path(), "a.tar.zst", 5 * MIB + 123);
    let small = random_file(dir.path(), "b.tar.zst", 1000);
    let want = sha256(&big);
    let r = sw
        .upload(&big, &c, "a.tar.zst", MIB as u64, dir.path(), Some(&want))
        .await
        .unwrap();
    assert_eq!(
        (r.segments, r.segments_skipped, r.sha256.as_str()),
        (6, 0, want.as_str())
    );
    sw.upload(&small, &c, "b.tar.zst", MIB as u64, dir.path(), None)
        .await
        .unwrap();
    let names: Vec<String> = sw
        .list(&c)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["a.tar.zst", "b.tar.zst"]);
    let segs = sw.list(&format!("{c}_segments")).await.unwrap();
    assert_eq!(segs.len(), 6);
    // Private: no read or write ACL on either container.
    for cont in [c.clone(), format!("{c}_segments")] {
        let h = sw.head_container(&cont).await.unwrap().unwrap();
        assert!(
            !h.contains_key("x-container-read") && !h.contains_key("x-container-write"),
            "{cont}: {h:?}"
        );
    }
    let out = dir.path().join("back");
    let n = sw.download(&c, "a.tar.zst", &out).await.unwrap();
    assert_eq!(n, 5 * MIB as u64 + 123);
    assert_eq!(sha256(&out), want);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let meta = sw.head(&c, "a.tar.zst").await.unwrap().unwrap();
    assert_eq!(meta[META_SHA256].to_str().unwrap(), want);
    let by_time = names_by_time(&sw, &c).await;
    assert_eq!(
        Some(&sw.newest_snapshot(&c).await.unwrap().unwrap().name),
        by_time.last()
    );
    let deleted = sw.prune(&c, 1).await.unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(sw.list(&c).await.unwrap().len(), 1);
    if deleted[0] == "a.tar.zst" {
        assert!(
            sw.list(&format!("{c}_segments")).await.unwrap().is_empty(),
            "segments deleted with their manifest"
        );
    }
}

async fn names_by_time(sw: &swift::Swift, c: &str) -> Vec<String> {
    swift::snapshots(sw.list(c).await.unwrap())
        .into_iter()
        .map(|o| o.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_killed_mid_upload_then_resumed_without_resending() {
    let _g = exclusive().await;
    let c = container("resume");
    let dir = tempfile::tempdir().unwrap();
    let src = random_file(dir.path(), "r.tar.zst", 40 * MIB + 7);
    let want = sha256(&src);
    let journal = swift::journal_path(dir.path(), "r.tar.zst");
    {
        let sw = std::sync::Arc::new(swift(Duration::from_secs(2)));
        sw.ensure_container(&c).await.unwrap();
        let (sw2, src2, c2, d2) = (sw.clone(), src.clone(), c.clone(), dir.path().to_owned());
        let task = tokio::spawn(async move {
            sw2.upload(&src2, &c2, "r.tar.zst", MIB as u64, &d2, None)
                .await
        });
        // Wait (on the journal, no fixed sleep) until some segments are finished.
        while swift::journal_segments_done(&journal) < 3 {
            assert!(
                !task.is_finished(),
                "upload finished before it could be cut"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server("stop", "proxy");
        let err = task.await.unwrap().expect_err("the proxy is dead");
        eprintln!("cut: {err}");
    }
    let done_before = swift::journal_segments_done(&journal);
    assert!((3..40).contains(&done_before), "{done_before}");
    server("start", "proxy");
    let sw = swift(Duration::from_secs(30));
    let before = sw.list(&format!("{c}_segments")).await.unwrap();
    let r = sw
        .upload(&src, &c, "r.tar.zst", MIB as u64, dir.path(), None)
        .await
        .unwrap();
    assert_eq!(r.segments, 41);
    assert_eq!(r.segments_skipped, done_before, "{r:?}");
    assert_eq!(
        r.bytes_sent,
        (41 - done_before as u64 - 1) * MIB as u64 + 7,
        "{r:?}"
    );
    assert_eq!(r.sha256, want);
    assert!(!journal.exists());
    // The segments stored before the cut were not written again (same timestamps).
    let after = sw.list(&format!("{c}_segments")).await.unwrap();
    for b in before.iter().take(done_before) {
        let a = after.iter().find(|a| a.name == b.name).unwrap();
        assert_eq!(a.last_modified, b.last_modified, "{} re-sent", b.name);
    }
    let out = dir.path().join("back");
    sw.download(&c, "r.tar.zst", &out).await.unwrap();
    assert_eq!(sha256(&out), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_server_down_503_retried_until_it_is_back() {
    let _g = exclusive().await;
    let sw = std::sync::Arc::new(swift(Duration::from_secs(120)));
    let c = container("busy");
    sw.ensure_container(&c).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = random_file(dir.path(), "s.tar.zst", 300_000);
    server("stop", "object");
    let (sw2, src2, c2, d2) = (sw.clone(), src.clone(), c.clone(), dir.path().to_owned());
    let task = tokio::spawn(async move {
        sw2.upload(&src2, &c2, "s.tar.zst", MIB as u64, &d2, None)
            .await
    });
    while sw.retries() < 2 {
        assert!(!task.is_finished(), "{:?}", task.await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server("start", "object");
    let r = task.await.unwrap().unwrap();
    assert_eq!(r.sha256, sha256(&src));
    let out = dir.path().join("back");
    sw.download(&c, "s.tar.zst", &out).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_renewed() {
    let _g = exclusive().await;
    let sw = swift(Duration::from_secs(30));
    let c = container("tok");
    sw.ensure_container(&c).await.unwrap();
    let issued = sw.session().tokens_issued();
    let t = sw.session().token().await.unwrap();
    // Revoke it at Keystone (a user may revoke its own token).
    let ks = sw.session().credentials().auth_url.clone();
    let r = reqwest::Client::new()
        .delete(format!("{ks}/auth/tokens"))
        .header("X-Auth-Token", t.value.expose())
        .header("X-Subject-Token", t.value.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let dir = tempfile::tempdir().unwrap();
    let src = random_file(dir.path(), "t.tar.zst", 1000);
    sw.upload(&src, &c, "t.tar.zst", MIB as u64, dir.path(), None)
        .await
        .unwrap();
    assert_eq!(
        sw.session().tokens_issued(),
        issued + 1,
        "one new token after the 401"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_bytes_are_refused_on_download() {
    let _g = exclusive().await;
    let sw = swift(Duration::from_secs(30));
    let c = container("bad");
    let dir = tempfile::tempdir().unwrap();
    let src = random_file(dir.path(), "x.tar.zst", 4000);
    let r = sw
        .upload(&src, &c, "x.tar.zst", MIB as u64, dir.path(), None)
        .await
        .unwrap();
    // Someone replaces the bytes and keeps our checksum metadata.
    let t = sw.session().token().await.unwrap();
    let base = sw
        .session()
        .endpoint(&["object-store"], "object-store")
        .await
        .unwrap();
    let put = reqwest::Client::new()
        .put(format!("{base}/{c}/x.tar.zst"))
        .header("X-Auth-Token", t.value.expose())
        .header(META_SHA256, &r.sha256)
        .body(vec![7u8; 4000])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let out = dir.path().join("back");
    let err = sw.download(&c, "x.tar.zst", &out).await.unwrap_err();
    assert!(matches!(err, swift::SwiftError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(!out.exists(), "a refused download leaves no file");
}
