//! The flags' defaults match the libraries', and their parsers.
use super::*;

#[test]
fn defaults_match_the_libraries() {
    let o = Options::parse_from(["server"]);
    assert_eq!(o.engine(), Config::default());
    let (r, d) = (o.runtime(), RuntimeConfig::default());
    assert_eq!(
        (
            r.hub_queue,
            r.outbound_frames,
            r.outbound_bytes,
            r.write_batch,
            r.write_timeout
        ),
        (
            d.hub_queue,
            d.outbound_frames,
            d.outbound_bytes,
            d.write_batch,
            d.write_timeout
        )
    );
    assert_eq!(
        (
            r.heartbeat_interval,
            r.handshake_timeout,
            r.close_timeout,
            r.shutdown_grace,
            r.max_connections
        ),
        (
            d.heartbeat_interval,
            d.handshake_timeout,
            d.close_timeout,
            d.shutdown_grace,
            d.max_connections
        )
    );
    assert_eq!(
        (r.store_timeout, r.store_concurrency),
        (d.store_timeout, d.store_concurrency)
    );
    assert_eq!(
        (r.close_linger, r.close_linger_bytes),
        (d.close_linger, d.close_linger_bytes)
    );
    let (w, dw) = (o.warp(), WarpConfig::default());
    assert_eq!(
        (
            w.max_frame_bytes,
            w.max_message_bytes,
            w.max_write_buffer_bytes,
            w.accept_backlog
        ),
        (
            dw.max_frame_bytes,
            dw.max_message_bytes,
            dw.max_write_buffer_bytes,
            dw.accept_backlog
        )
    );
    assert_eq!(
        (
            w.header_read_timeout,
            w.max_request_headers,
            w.max_request_header_bytes,
            w.max_http_connections
        ),
        (
            dw.header_read_timeout,
            dw.max_request_headers,
            dw.max_request_header_bytes,
            dw.max_http_connections
        )
    );
    assert_eq!(w.serve_web_client, dw.serve_web_client);
    assert_eq!(
        (
            w.max_http_connections_per_ip,
            &w.trusted_proxies,
            w.exempt_loopback
        ),
        (
            dw.max_http_connections_per_ip,
            &dw.trusted_proxies,
            dw.exempt_loopback
        )
    );
    assert_eq!(
        (&w.socket_paths, w.close_timeout),
        (&dw.socket_paths, dw.close_timeout)
    );
    let (s, ds) = (o.memory_store(), MemoryConfig::default());
    assert_eq!(
        (
            s.room_history,
            s.dm_history,
            s.max_rooms,
            s.max_dm_conversations,
            s.max_bytes
        ),
        (
            ds.room_history,
            ds.dm_history,
            ds.max_rooms,
            ds.max_dm_conversations,
            ds.max_bytes
        )
    );
}

#[test]
fn the_store_byte_budget_has_a_flag_and_an_env_var() {
    let o = Options::try_parse_from(["server", "--store-max-bytes", "1048576"]).unwrap();
    assert_eq!(o.memory_store().max_bytes, 1_048_576);
    assert!(Options::try_parse_from(["server", "--store-max-bytes", "lots"]).is_err());
    let help = <Options as clap::CommandFactory>::command()
        .render_long_help()
        .to_string();
    assert!(help.contains("CHAT_STORE_MAX_BYTES"), "{help}");
    assert!(help.contains("268435456"), "{help}");
}

#[test]
fn the_global_outbound_budget_has_a_flag_and_an_env_var() {
    let o = Options::try_parse_from(["server", "--outbound-global-bytes", "1000000"]).unwrap();
    assert_eq!(o.runtime().outbound_global_bytes, 1_000_000);
    let d = Options::try_parse_from(["server"]).unwrap();
    assert_eq!(
        d.runtime().outbound_global_bytes,
        RuntimeConfig::default().outbound_global_bytes
    );
    let help = <Options as clap::CommandFactory>::command()
        .render_long_help()
        .to_string();
    assert!(help.contains("CHAT_OUTBOUND_GLOBAL_BYTES"), "{help}");
}

#[test]
fn rates_parse_and_can_be_switched_off() {
    assert_eq!(
        parse_rate("10/1"),
        Ok(RateArg(Some(Rate::per_second(10, 1))))
    );
    assert_eq!(parse_rate("OFF"), Ok(RateArg(None)));
    assert!(parse_rate("10").is_err());
    assert!(parse_rate("0/1").is_err());
    assert_eq!(parse_optional_duration("off"), Ok(OptionalDuration(None)));
    assert_eq!(parse_optional_duration("0s"), Ok(OptionalDuration(None)));
    assert_eq!(
        parse_optional_duration("30s"),
        Ok(OptionalDuration(Some(Duration::from_secs(30))))
    );
}

const SECRET: &str = "test-only secret, 32 bytes or more!!";

fn fixture(name: &str) -> String {
    format!(
        "{}/../chat-auth/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn admission_is_per_ip_limits_only_by_default() {
    let o = Options::parse_from(["server"]);
    assert_eq!(o.jwt().expect("no key"), None);
    assert!(o.allowed_origins.is_empty());
    assert!(o.allow_missing_origin);
    assert_eq!(o.jwt_leeway, chat_auth::DEFAULT_LEEWAY);
    let defaults = PerIpConfig::default();
    assert_eq!(o.max_connections_per_ip.0, defaults.max_connections);
    assert_eq!(o.connections_per_ip_rate.0, defaults.rate);
    assert_eq!(o.admission().expect("valid").len(), 1);
    assert_eq!(
        o.admission_summary(),
        "64 connections per IP, new connections per IP: burst 20 then one per 200ms, \
         loopback not limited per IP, anonymous (no JWT)"
    );
}

#[test]
fn every_policy_can_be_switched_on_or_off() {
    let o = Options::parse_from([
        "server",
        "--jwt-hs256-secret",
        SECRET,
        "--jwt-issuer",
        "https://auth.example",
        "--jwt-audience",
        "chat",
        "--jwt-leeway",
        "5s",
        "--jwt-require-name",
        "--allowed-origins",
        "https://chat.example,http://localhost:3000",
        "--allow-missing-origin",
        "false",
        "--max-connections-per-ip",
        "off",
        "--connections-per-ip-rate",
        "off",
    ]);
    let jwt = o.jwt().expect("valid").expect("a JWT config");
    assert_eq!(
        jwt.algorithm,
        JwtAlgorithm::Hs256 {
            secret: SECRET.as_bytes().to_vec()
        }
    );
    assert_eq!(jwt.issuer.as_deref(), Some("https://auth.example"));
    assert_eq!(jwt.audience.as_deref(), Some("chat"));
    assert_eq!(jwt.leeway, Duration::from_secs(5));
    assert!(jwt.require_name);
    assert_eq!(
        o.allowed_origins,
        ["https://chat.example", "http://localhost:3000"]
    );
    assert!(!o.allow_missing_origin);
    // Origin and JWT; the per-IP limits are off.
    assert_eq!(o.admission().expect("valid").len(), 2);
    let summary = o.admission_summary();
    assert!(summary.contains("JWT HS256 required"), "{summary}");
    assert!(!summary.contains(SECRET), "{summary}");
}

#[test]
fn public_key_files_are_read() {
    let rs = Options::parse_from([
        "server",
        "--jwt-rs256-public-key",
        &fixture("rsa-public.pem"),
    ]);
    assert!(matches!(
        rs.jwt().expect("readable").expect("a JWT config").algorithm,
        JwtAlgorithm::Rs256 { .. }
    ));
    assert_eq!(rs.admission().expect("valid").len(), 2);
    let ed = Options::parse_from([
        "server",
        "--jwt-eddsa-public-key",
        &fixture("ed25519-public.pem"),
    ]);
    assert!(ed.admission().is_ok());
    let missing = Options::parse_from(["server", "--jwt-eddsa-public-key", "/no/such.pem"]);
    assert!(matches!(
        missing.admission(),
        Err(SecurityError::ReadKey { .. })
    ));
    // The right file for the other algorithm is refused at startup.
    let swapped = Options::parse_from([
        "server",
        "--jwt-eddsa-public-key",
        &fixture("rsa-public.pem"),
    ]);
    assert!(matches!(swapped.admission(), Err(SecurityError::Jwt(_))));
}

#[test]
fn security_flags_are_checked() {
    // One key only.
    assert!(
        Options::try_parse_from([
            "server",
            "--jwt-hs256-secret",
            SECRET,
            "--jwt-eddsa-public-key",
            "k.pem",
        ])
        .is_err()
    );
    // Issuer and audience need a key.
    assert!(Options::try_parse_from(["server", "--jwt-issuer", "x"]).is_err());
    // Short secrets and bad origins are refused when the policies are built.
    let short = Options::parse_from(["server", "--jwt-hs256-secret", "short"]);
    assert!(matches!(short.admission(), Err(SecurityError::Jwt(_))));
    let origin = Options::parse_from(["server", "--allowed-origins", "https://a.example/app"]);
    assert!(matches!(origin.admission(), Err(SecurityError::Origin(_))));
    assert_eq!(parse_optional_count("off"), Ok(OptionalCount(None)));
    assert_eq!(parse_optional_count("8"), Ok(OptionalCount(Some(8))));
    assert!(parse_optional_count("0").is_err());
    assert!(parse_optional_count("many").is_err());
}

#[test]
fn the_secret_is_not_in_debug_output() {
    let o = Options::parse_from(["server", "--jwt-hs256-secret", SECRET]);
    let shown = format!("{o:?}");
    assert!(!shown.contains(SECRET), "{shown}");
}

#[test]
fn proxy_and_loopback_flags() {
    let defaults = Options::parse_from(["server"]);
    assert_eq!(defaults.trusted_proxies, None);
    assert!(!defaults.limit_loopback);
    assert_eq!(
        defaults.max_http_connections_per_ip,
        OptionalCount(Some(256))
    );

    let o = Options::parse_from([
        "server",
        "--trusted-proxies",
        "127.0.0.0/8, 10.1.2.3,fd00::/8",
        "--limit-loopback",
        "--max-http-connections-per-ip",
        "off",
    ]);
    let w = o.warp();
    assert_eq!(
        w.trusted_proxies.to_string(),
        "127.0.0.0/8,10.1.2.3/32,fd00::/8"
    );
    assert!(w.trusted_proxies.contains("10.1.2.3".parse().expect("ip")));
    assert!(!w.exempt_loopback);
    assert_eq!(w.max_http_connections_per_ip, None);
    assert!(
        o.admission_summary()
            .contains("trusted proxies 127.0.0.0/8,10.1.2.3/32,fd00::/8"),
        "{}",
        o.admission_summary()
    );
    assert!(!o.admission_summary().contains("loopback"));

    assert!(
        Options::try_parse_from(["server", "--trusted-proxies", "10.0.0.0/99"]).is_err(),
        "a bad CIDR is refused at startup"
    );
    let o =
        Options::try_parse_from(["server", "--max-http-connections-per-ip", "3"]).expect("valid");
    assert_eq!(o.warp().max_http_connections_per_ip, Some(3));
}

#[test]
fn close_linger_flags_set_the_runtime() {
    let o = Options::parse_from([
        "server",
        "--close-linger",
        "250ms",
        "--close-linger-bytes",
        "4096",
    ]);
    let r = o.runtime();
    assert_eq!(r.close_linger, std::time::Duration::from_millis(250));
    assert_eq!(r.close_linger_bytes, 4096);
}

#[test]
fn the_store_defaults_to_sqlite_under_the_working_directory() {
    let o = Options::parse_from(["server"]);
    assert_eq!(
        o.store,
        StoreChoice::Sqlite(PathBuf::from("chat-data/chat.db"))
    );
    assert_eq!(o.sqlite_store(), SqliteConfig::default());
    let m = Options::try_parse_from(["server", "--store", "memory"]).expect("memory");
    assert_eq!(m.store, StoreChoice::Memory);
    let e = Options::try_parse_from(["server", "--store", "redis://x"]).unwrap_err();
    assert!(e.to_string().contains("unknown store `redis`"), "{e}");
    let r = Options::try_parse_from([
        "server",
        "--retention-keep-last",
        "500",
        "--retention-max-age",
        "7days",
        "--sqlite-synchronous",
        "normal",
    ])
    .expect("retention");
    let c = r.sqlite_store();
    assert_eq!(c.retention.keep_last, NonZeroU64::new(500));
    assert_eq!(c.retention.max_age, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(c.synchronous, Synchronous::Normal);
    let help = <Options as clap::CommandFactory>::command()
        .render_long_help()
        .to_string();
    assert!(help.contains("CHAT_STORE"), "{help}");
}

#[test]
fn a_cluster_needs_a_shared_store_and_is_off_by_default() {
    assert_eq!(Options::parse_from(["server"]).cluster(), Ok(None));
    let alone = Options::parse_from(["server", "--redis", "redis://127.0.0.1:6379"]);
    let refused = alone.cluster().unwrap_err();
    assert!(matches!(refused, ClusterFlagError::StoreNotShared(_)));
    assert!(
        refused.to_string().contains("--store postgres://"),
        "{refused}"
    );
    let config = Options::parse_from([
        "server",
        "--redis",
        "redis://10.1.2.3:6379",
        "--store",
        "postgres://chat@db:5432/chat",
        "--node-id",
        "node-a",
        "--cluster-lease",
        "4s",
    ])
    .cluster()
    .unwrap()
    .unwrap();
    assert_eq!(config.url, "redis://10.1.2.3:6379");
    assert_eq!(config.node_id.as_deref(), Some("node-a"));
    assert_eq!(config.prefix, "chat:");
    assert_eq!(
        (config.lease, config.renew_every),
        (Duration::from_secs(4), Duration::from_secs(1))
    );
    let defaults = chat_redis::RedisClusterConfig::default();
    let o = Options::parse_from([
        "server",
        "--redis",
        "redis://x",
        "--store",
        "postgres://db/c",
    ]);
    let config = o.cluster().unwrap().unwrap();
    assert_eq!((config.lease, config.node_id), (defaults.lease, None));
    assert!(Options::try_parse_from(["server", "--node-id", "a b"]).is_err());
}
