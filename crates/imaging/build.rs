//! Compiles csrc/jpeg_refine.c, the faster decoder of progressive JPEG's AC refinement scans,
//! against the libjpeg-turbo that mozjpeg-sys vendors (its headers come as DEP_JPEG_INCLUDE).
//!
//! That file repeats the private state of libjpeg-turbo's progressive decoder (jdphuff.c). It is
//! compiled only when the vendored jdphuff.c declares that state exactly so; otherwise the build
//! goes on without it (cfg `jpeg_refine_off`, with a warning) and JPEG decoding is only slower.
//! `decode::jpeg`'s tests fail in that case, naming this file.

use std::path::PathBuf;

/// jdphuff.c's declarations that csrc/jpeg_refine.c repeats, field by field.
const SAVABLE_STATE: &[&str] = &["unsigned int EOBRUN", "int last_dc_val[MAX_COMPS_IN_SCAN]"];
const PHUFF_ENTROPY_DECODER: &[&str] = &[
    "struct jpeg_entropy_decoder pub",
    "bitread_perm_state bitstate",
    "savable_state saved",
    "unsigned int restarts_to_go",
    "d_derived_tbl *derived_tbls[NUM_HUFF_TBLS]",
    "d_derived_tbl *ac_derived_tbl",
];

fn main() {
    println!("cargo::rerun-if-changed=csrc/jpeg_refine.c");
    println!("cargo::rustc-check-cfg=cfg(jpeg_refine_off)");
    let includes: Vec<PathBuf> =
        std::env::var_os("DEP_JPEG_INCLUDE").map(|paths| std::env::split_paths(&paths).collect()).unwrap_or_default();
    let jdphuff = includes.iter().map(|dir| dir.join("jdphuff.c")).find(|file| file.exists());
    let source = jdphuff.as_ref().and_then(|file| std::fs::read_to_string(file).ok());
    let declares = |c: &str, name: &str, expected: &[&str]| {
        fields(c, name).is_some_and(|found| found.iter().map(String::as_str).eq(expected.iter().copied()))
    };
    let matches = source.as_deref().is_some_and(|c| {
        declares(c, "savable_state", SAVABLE_STATE) && declares(c, "phuff_entropy_decoder", PHUFF_ENTROPY_DECODER)
    });
    if !matches {
        println!(
            "cargo::warning=imaging: the vendored libjpeg-turbo's jdphuff.c ({}) does not declare its \
             decoder state as csrc/jpeg_refine.c repeats it; building without the faster refinement \
             decoder (progressive JPEGs decode more slowly)",
            jdphuff.map_or("not found".into(), |f| f.display().to_string())
        );
        println!("cargo::rustc-cfg=jpeg_refine_off");
        return;
    }
    let mut build = cc::Build::new();
    build.file("csrc/jpeg_refine.c").includes(&includes).flag_if_supported("-Werror=implicit-function-declaration");
    // libjpeg's fatal errors unwind through these frames to decode::jpeg's catch_unwind, as they
    // do through libjpeg's own (mozjpeg-sys builds it the same way).
    build.flag_if_supported("-fexceptions");
    build.compile("resizer_jpeg_refine");
}

/// The fields of C's `typedef struct { ... } NAME;` in `c`, comments dropped and spaces
/// collapsed, one per declaration.
fn fields(c: &str, name: &str) -> Option<Vec<String>> {
    let end = c.find(&format!("}} {name};"))?;
    let start = c[..end].rfind("typedef struct {")? + "typedef struct {".len();
    let mut body = String::new();
    let mut rest = &c[start..end];
    while let Some(open) = rest.find("/*") {
        body.push_str(&rest[..open]);
        rest = rest[open..].find("*/").map_or("", |close| &rest[open + close + 2..]);
    }
    body.push_str(rest);
    let fields: Vec<String> = body
        .split(';')
        .map(|field| field.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|field| !field.is_empty())
        .collect();
    Some(fields)
}
