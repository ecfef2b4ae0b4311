//! `resizer url`: prints a signed GET URL for a source and options (docs/urls.md), made with a
//! signing key's id and secret as `resizer admin keys create --signing` printed them. It signs
//! locally, with no call to any server: what a customer's backend or build step does.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;

#[derive(Args, Debug)]
pub struct UrlArgs {
    /// The source image's URL (https://…, or http://… where the tenant allows it).
    pub source: String,
    /// The signing key's id (the `id` printed when it was created).
    #[arg(long)]
    pub key_id: String,
    /// The signing key's secret (64 hex digits). Read from RESIZER_URL_SECRET when not given,
    /// which keeps it out of the shell history and the process list.
    #[arg(long)]
    pub secret: Option<String>,
    /// The options, as POST /v1/resize's query with `,` between them: `width=300,format=auto`.
    #[arg(long, default_value = "width=300")]
    pub options: String,
    /// The URL stops working this many seconds from now (signed into it as `exp=`).
    #[arg(long, value_name = "SECONDS")]
    pub expires_in: Option<u64>,
    /// The service's public URL the path is appended to.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base: String,
}

pub fn run(args: UrlArgs) -> anyhow::Result<ExitCode> {
    let key = args.key_id.parse::<identity::KeyId>().map_err(|_| anyhow::anyhow!("--key-id: not a key id"))?;
    let secret = match args.secret {
        Some(secret) => secret,
        None => std::env::var("RESIZER_URL_SECRET").context("give --secret or set RESIZER_URL_SECRET")?,
    };
    let secret = api::KeySecret::from_hex(&secret).context("the signing secret is not 64 hex digits")?;
    if args.options.contains('&') || args.options.contains('/') {
        bail!("--options: separate the options with `,` (width=300,format=auto); `/` and `&` have no place in them");
    }
    let mut options = args.options.clone();
    if let Some(seconds) = args.expires_in {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        options.push_str(&format!(",exp={}", now.saturating_add(seconds)));
    }
    let path = api::signed_path(key, &secret, &options, &args.source);
    println!("{}{path}", args.base.trim_end_matches('/'));
    Ok(ExitCode::SUCCESS)
}
