//! The Swift side of `cfy-init snapshot create --upload | upload | list --remote` and
//! `cfy-init restore swift://...`: run in the CLI's own process (or PID 1's upload child),
//! never inside PID 1 (see `snapshot::remote`).

use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::Context;
use crate::snapshot::remote;

/// Upload local snapshot `id`; `json` prints the report as one line (for PID 1's child).
pub async fn upload(ctx: &Context, id: &str, json: bool) -> anyhow::Result<()> {
    let r = remote::upload(ctx, id)
        .await
        .with_context(|| format!("snapshot {id}: upload to Swift"))?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let c = ctx
            .config
            .snapshot
            .remote
            .as_ref()
            .map(|r| r.container.as_str());
        println!(
            "snapshot {id}: copied to swift://{}/{id}.tar.zst: {} bytes in {} segments ({} already there)",
            c.unwrap_or(""),
            r.bytes,
            r.segments,
            r.segments_skipped
        );
    }
    Ok(())
}

pub async fn list(ctx: &Context) -> anyhow::Result<()> {
    let copies = remote::list(ctx).await.context("snapshot list --remote")?;
    let c = ctx
        .config
        .snapshot
        .remote
        .as_ref()
        .map(|r| r.container.clone())
        .unwrap_or_default();
    println!("{:<48} {:<14} UPLOADED", "URL", "SIZE");
    for o in copies {
        println!(
            "{:<48} {:<14} {}",
            format!("swift://{c}/{}", o.name),
            o.bytes,
            o.last_modified
        );
    }
    Ok(())
}

/// Download `swift://CONTAINER/OBJECT` into a 0600 file of the archive directory, checked
/// against the sha256 stored at upload; the caller restores from it and deletes it.
pub async fn fetch(ctx: &Context, url: &str) -> anyhow::Result<PathBuf> {
    let (container, object) = cfy_openstack::swift::parse_url(url)
        .with_context(|| format!("{url}: expected swift://CONTAINER/OBJECT"))?;
    let dir = &ctx.config.snapshot.archive_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let dest = dir.join(format!(".swift-{:08x}.partial", rand::random::<u32>()));
    let n = remote::download(ctx, &container, &object, &dest)
        .await
        .with_context(|| format!("{url}: download"))?;
    eprintln!("{url}: {n} bytes downloaded and checked");
    Ok(dest)
}
