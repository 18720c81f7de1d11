//! A process on jemalloc without `prof:true`: the source says so plainly, and the server answers
//! `501` with what to set, instead of an empty profile.

use heapsight::{SnapshotSource, SourceErrorKind};
use std::io::{Read, Write};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[test]
fn snapshots_fail_with_how_to_turn_profiling_on() {
    if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
        eprintln!("skipped: _RJEM_MALLOC_CONF is set in the environment");
        return;
    }
    let e = heapsight_jemalloc::JemallocSource::new()
        .snapshot()
        .unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::NotEnabled);
    assert!(e.message.contains("prof:true"), "{e}");
    assert!(heapsight_jemalloc::set_active(true).is_err());

    let server = heapsight_server::Options::new()
        .source(heapsight_jemalloc::JemallocSource::new())
        .spawn("127.0.0.1:0")
        .unwrap();
    for path in ["heap", "allocs?seconds=1", "heap?debug=1", "ui/api/tree"] {
        let mut conn = std::net::TcpStream::connect(server.local_addr()).unwrap();
        write!(
            conn,
            "GET /debug/pprof/{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 501"), "{path}: {reply}");
        assert!(reply.contains("prof:true"), "{path}: {reply}");
    }
}
