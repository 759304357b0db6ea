//! `shoal stack config -c FILE…`: the files merged and interpolated, printed as the compose
//! file deploy reads (the loader's `render`), without a manager.

use clap::Args;

use super::ComposeFiles;

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(flatten)]
    files: ComposeFiles,
}

pub(crate) fn config(args: &ConfigArgs) -> anyhow::Result<()> {
    let project = args.files.load()?;
    print!("{}", shoal_compose::render(&project));
    Ok(())
}
