fn main() -> anyhow::Result<()> {
    anyhow::bail!("cfy-recover: not implemented yet")
}
