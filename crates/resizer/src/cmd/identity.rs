//! `resizer identity`: the cluster's identity service. It serves the admin API (tenants, limits,
//! keys) over the authoritative store — PostgreSQL in the cluster (`identity.database =
//! postgres://...`) — and relays every committed change, in order, to the JetStream KV bucket
//! that feeds each api node's credential cache. Consistent before available: while PostgreSQL
//! is down, admin writes fail with 503 and nothing is half-done; resizes go on at the api nodes
//! with the credentials they have. Given the usage rollups database and archive (as the api
//! nodes are), it also answers the admin API's usage and audit reads, so that one admin URL
//! serves every admin call, tenants named by name included. It hears the api nodes' presence
//! announcements, so that the admin API's node list shows the health of every api node.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use identity::CredentialCache;

use crate::config::{Config, ConfigArgs};
use crate::logging;
use crate::node::{bind, open_archive, open_rollups, RollupAccess};

#[derive(clap::Args, Debug)]
pub struct IdentityArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(args: IdentityArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config, &[])?;
    logging::init(&config.log)?;
    if config.api.admin_token.is_empty() && config.api.operators_file.is_empty() {
        bail!(
            "the identity service needs an operator with admin access: set api.admin_token \
             (RESIZER_API_ADMIN_TOKEN; `resizer admin new-token` makes one) or api.operators_file"
        );
    }
    // Checked here too, before any connection, so a weak token stops the start at once.
    let api_config = config.api_config(&config.api.admin_token)?;
    let nats_urls = config.nats_urls();
    if nats_urls.is_empty() {
        bail!("the identity service relays changes through NATS: set queue.nats_urls");
    }
    let store = config.open_identity_store()?;
    let usage_reads = open_usage_reads(&config)?;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        if let Some(reads) = &usage_reads {
            tokio::spawn(usage::follow_totals(reads.rollups.clone(), reads.quota_board.clone(), true));
        }
        let admin = bind(&config.api.admin_listen, "api.admin_listen").await?;
        tracing::info!(admin_url = %admin.local_addr()?, nats = queue::redact_urls(&config.queue.nats_urls), "resizer identity started");
        let client = queue::connect(&nats_urls, "identity", Some(queue::Role::Identity), config.nats_tls_ca()).await?;
        crate::node::refuse_broad_nats_login(nats_urls.clone(), config.nats_tls_ca(), queue::Role::Identity);
        let cache = Arc::new(CredentialCache::new());
        let app = api::App::new(
            api_config,
            api::Credentials::Store(store.clone()),
            cache,
            api::Conversions::None,
            usage_reads,
        )
        .context("sources.extra_ca_file")?;
        // The operator console's node list: the api nodes' presence, imported from the service
        // account (`queue::service_links`).
        let board = Arc::new(queue::NodeBoard::default());
        app.show_nodes(board.clone());
        let watch = tokio::spawn(queue::watch_nodes(client.clone(), board));
        let relay = tokio::spawn(identity_kv::relay(
            store,
            async_nats::jetstream::new(client),
            config.queue.replicas.max(1),
            app.identity_written(),
            Duration::from_millis(config.identity.relay_interval_ms.max(10)),
        ));
        let listeners = api::Listeners { public: None, admin, internal: None, tls: config.api_tls()? };
        let served = api::serve(app, listeners, crate::signals::shutdown()).await;
        relay.abort();
        watch.abort();
        served.map_err(anyhow::Error::from)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The usage and audit reads of the admin API, over the rollups and archive the aggregators
/// write; None (those reads answer 503) without a `postgres://` `usage.rollups_database`.
fn open_usage_reads(config: &Config) -> anyhow::Result<Option<api::Metering>> {
    if !config.usage.enabled || !config.usage.rollups_database.starts_with("postgres") {
        tracing::info!("no usage.rollups_database: usage and audit reads are served by the api nodes only");
        return Ok(None);
    }
    Ok(Some(api::Metering {
        spool: None,
        shipments: None,
        rollups: open_rollups(config, RollupAccess::Read)?,
        archive: open_archive(config)?,
        node: "identity".into(),
        rollup_reads: Arc::new(tokio::sync::Semaphore::new(api::ROLLUP_READS_AT_ONCE)),
        // Fed in the runtime (`follow_totals`): the admin API's quota status and soft flag.
        quota_board: Arc::new(usage::QuotaBoard::new("identity")),
    }))
}
