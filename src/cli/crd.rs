//! `posthorn crd`: the MailServer CustomResourceDefinition, as `crds/` and the chart
//! carry it.

pub fn run() -> anyhow::Result<()> {
    print!("{}", crate::api::crd_yaml()?);
    Ok(())
}
