//! `molt image unpack|inspect|prune`: OCI images as bundles (the upgrade takes them with
//! `molt upgrade ID --image REF`).

use std::io::Write;
use std::path::PathBuf;

use super::{CmdResult, Ctx};
use crate::image::{self, store, Image, Reference};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Write a runnable bundle (DIR/config.json + DIR/rootfs) from an image: oci:DIR[:TAG],
    /// oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]; made as DIR.tmp-* and renamed
    Unpack { reference: String, dir: PathBuf },
    /// Version, upgrade constraint, platform, manifest digest and layers of an image
    Inspect {
        reference: String,
        /// text or json
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Remove unpacked images under <root>/images that no container uses
    Prune,
}

impl Cmd {
    /// Inspecting reads files; unpacking sets ownership and prune reads the state root.
    pub fn needs_root(&self) -> bool {
        !matches!(self, Cmd::Inspect { .. })
    }
}

fn inspect(img: &Image) -> serde_json::Value {
    let labels = img.labels();
    let layers: Vec<_> = img
        .manifest
        .layers()
        .iter()
        .map(|d| serde_json::json!({"digest": d.digest().to_string(), "size": d.size(), "mediaType": d.media_type().to_string()}))
        .collect();
    serde_json::json!({
        "reference": img.reference,
        "version": labels.get(crate::upgrade::eligibility::VERSION_ANNOTATION),
        "constraint": labels.get(crate::upgrade::eligibility::CONSTRAINT_ANNOTATION),
        "platform": img.platform(),
        "manifest": img.manifest_digest,
        "layers": layers,
    })
}

pub fn run(ctx: &Ctx, c: Cmd) -> CmdResult {
    let mut out = std::io::stdout();
    match c {
        Cmd::Unpack { reference, dir } => {
            let img = store::unpack_to(&reference, &dir)?;
            out.write_all(format!("{}: unpacked {} into {}\n", reference, img.manifest_digest, dir.display()).as_bytes())?;
        }
        Cmd::Inspect { reference, format } => {
            if format != "text" && format != "json" {
                return Err(format!("--format {format:?}: use text or json").into());
            }
            let img = Image::open(&Reference::parse(&reference)?, &std::env::temp_dir())?;
            let v = inspect(&img);
            if format == "json" {
                out.write_all(format!("{}\n", serde_json::to_string_pretty(&v)?).as_bytes())?;
            } else {
                let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
                let mut text = format!(
                    "reference   {}\nversion     {}\nconstraint  {}\nplatform    {}\nmanifest    {}\nlayers\n",
                    s("reference"), s("version"), s("constraint"), s("platform"), s("manifest")
                );
                for l in v["layers"].as_array().into_iter().flatten() {
                    text.push_str(&format!("  {}  {:>10}  {}\n", l["digest"].as_str().unwrap_or(""), l["size"], l["mediaType"].as_str().unwrap_or("")));
                }
                out.write_all(text.as_bytes())?;
            }
        }
        Cmd::Prune => match store::prune(&ctx.root)? {
            Some(removed) => {
                for p in removed {
                    out.write_all(format!("removed {}\n", p.display()).as_bytes())?;
                }
            }
            None => return Err(image::ImageError::Io { reference: "store".into(), path: store::images_dir(&ctx.root), reason: "an upgrade is using the image store; try again when it has finished".into() }.into()),
        },
    }
    Ok(0)
}
