//! Puts the git commit molt is built from into `molt --version` (MOLT_COMMIT), as runc does;
//! "unknown" outside a git checkout (a source tarball). Links the binary with its hot functions
//! first (hot-functions.txt, see `link_hot_functions_first`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

fn main() {
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        println!("cargo:rustc-env=MOLT_COMMIT={commit}");
    }
    // A new commit (HEAD moves, or the branch it names does) rebuilds with the new id.
    for f in [git(&["rev-parse", "--git-path", "HEAD"]), git(&["rev-parse", "--symbolic-full-name", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r]))]
        .into_iter()
        .flatten()
    {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    link_hot_functions_first();
}

/// The functions molt's lifecycle commands run (hot-functions.txt, made by scripts/hot-functions)
/// are laid out together by the linker. Spread over 7 MB of code they made each command map
/// about 4.3 MB of molt's text (the kernel maps file pages 64 KiB around each fault); together,
/// about 1 MB. lld reads the list (--symbol-ordering-file), as rustc links this target by
/// default; names the list has and the binary lacks are ignored, so a stale list costs memory,
/// never correctness. molt's own names stay valid across edits because the release profile
/// builds it as one codegen unit (Cargo.toml): with several, names promoted between units carry
/// a `.llvm.N` suffix that changed with any edit of the unit (a one-function change cost 1 MiB of
/// the gain). Without rustc's lld the binary is linked as before, saying so.
fn link_hot_functions_first() {
    let list = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join("hot-functions.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") || !list.exists() {
        return;
    }
    let Some(gcc_ld) = rustc_lld_dir().filter(|d| d.join("ld.lld").exists()) else {
        println!("cargo:warning=rustc's lld not found: molt is linked without hot-functions.txt (a larger peak RSS)");
        return;
    };
    for arg in [format!("-B{}", gcc_ld.display()), "-fuse-ld=lld".into(), format!("-Wl,--symbol-ordering-file={}", list.display()), "-Wl,--no-warn-symbol-ordering".into()] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}

/// The directory of rustc's own lld driver for cc (`-B` of it with `-fuse-ld=lld` links with lld).
fn rustc_lld_dir() -> Option<PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).args(["--print", "sysroot"]).output().ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    Some(Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld"))
}
