//! The UI's JSON API on labelled allocations, on a real server with a fast snapshot history:
//! one tenant's memory grows while another's stays put. Grouped by `tenant`, the tree's first
//! level is the tenants with their bytes, the growing list names the growing tenant, every
//! node carries the label sets under it, and a bad `group` is a 400.

mod common;

use common::request_to;
use heapsight::Labels;
use serde_json::Value;
use std::time::Duration;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

const BLOCK: usize = 256 << 10;

#[inline(never)]
fn tenant_block(kept: &mut Vec<Vec<u8>>, i: usize) {
    kept.push(vec![i as u8; BLOCK]);
}

fn get_json(addr: std::net::SocketAddr, path: &str) -> Value {
    let r = request_to(addr, &format!("GET {path} HTTP/1.1"), b"");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn string(tree: &Value, i: &Value) -> String {
    tree["strings"][i.as_u64().unwrap() as usize]
        .as_str()
        .unwrap()
        .to_string()
}

/// The tree's first level: name and total of each child of the root.
fn first_level(tree: &Value) -> Vec<(String, i64)> {
    let parent = tree["parent"].as_array().unwrap();
    (1..parent.len())
        .filter(|&i| parent[i] == 0)
        .map(|i| {
            (
                string(tree, &tree["name"][i]),
                tree["total"][i].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn grouped_by_a_label_key_the_tree_and_growing_list_are_per_value() {
    heapsight::set_sample_rate(64 * 1024);
    let server = heapsight_server::Options::new()
        .history(Duration::from_millis(100), 50, 64 << 20)
        .spawn("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();

    // globex: 8 MiB held from the start, unchanged; acme: 256 KiB more every 50 ms, to 10 MiB.
    let (acme, globex) = (
        Labels::new([("tenant", "acme")]),
        Labels::new([("tenant", "globex")]),
    );
    let mut unlabelled = Vec::new();
    (0..16).for_each(|i| tenant_block(&mut unlabelled, i));
    let mut steady = Vec::new();
    globex.run(|| (0..32).for_each(|i| tenant_block(&mut steady, i)));
    let mut growing = Vec::new();
    for i in 0..40 {
        acme.run(|| tenant_block(&mut growing, i));
        std::thread::sleep(Duration::from_millis(50));
    }

    let tree = get_json(addr, "/debug/pprof/ui/api/tree?group=tenant");
    assert_eq!(tree["group"], "tenant");
    let keys: Vec<&str> = tree["label_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(keys.contains(&"tenant"), "{keys:?}");
    let level = first_level(&tree);
    let total = |name: &str| {
        level
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} among {level:?}"))
            .1 as f64
    };
    let held = |tenant: &str| match tenant {
        "tenant=acme" => (growing.len() * BLOCK) as f64,
        _ => (steady.len() * BLOCK) as f64,
    };
    for name in ["tenant=acme", "tenant=globex"] {
        let (t, held) = (total(name), held(name));
        assert!(
            (t - held).abs() < 0.15 * held,
            "{name}: {t} estimated for {held} held"
        );
    }
    assert!(
        total("tenant=(none)") > 0.85 * (unlabelled.len() * BLOCK) as f64,
        "what no tenant holds is grouped apart: {level:?}"
    );
    // Tenant values are not code: the UI does not colour them as the service's own.
    let user = tree["user"].as_array().unwrap();
    let strings = tree["strings"].as_array().unwrap();
    let at = strings.iter().position(|s| s == "tenant=acme").unwrap();
    assert_eq!(user[at], false);

    // Ungrouped, the site's nodes carry the tenants' label sets, each with its bytes (the site
    // is reached by two paths: directly, and through `Labels::run`).
    let tree = get_json(addr, "/debug/pprof/ui/api/tree");
    assert!(tree.get("group").is_none());
    let names = tree["name"].as_array().unwrap();
    let mut sets: std::collections::BTreeMap<String, i64> = Default::default();
    for i in (0..names.len()).filter(|&i| string(&tree, &names[i]) == "labels_api::tenant_block") {
        for p in tree["labels"][i].as_array().unwrap() {
            *sets.entry(string(&tree, &p[0])).or_default() += p[1].as_i64().unwrap();
        }
    }
    // The unlabelled blocks are the rest of the site's bytes, under no label set.
    assert_eq!(
        sets.keys().collect::<Vec<_>>(),
        ["tenant=acme", "tenant=globex"],
        "{sets:?}"
    );
    for (set, bytes) in &sets {
        let held = held(set);
        assert!((*bytes as f64 - held).abs() < 0.15 * held, "{sets:?}");
    }
    let root_sets = tree["labels"][0].as_array().unwrap();
    assert!(!root_sets.is_empty(), "the root sums the label sets too");

    // The growing list: per stack, its labels; grouped, per tenant, and acme leads.
    let list = get_json(addr, "/debug/pprof/ui/api/growing?window=20");
    let top = &list["stacks"][0];
    assert_eq!(top["site"], "labels_api::tenant_block", "{list}");
    assert_eq!(top["labels"], serde_json::json!(["tenant=acme"]), "{top}");
    let list = get_json(addr, "/debug/pprof/ui/api/growing?window=20&group=tenant");
    assert_eq!(list["group"], "tenant");
    let top = &list["stacks"][0];
    assert_eq!(top["site"], "tenant=acme", "{list}");
    assert!(top["rate_per_second"].as_f64().unwrap() > 1e6, "{top}");
    let sites: Vec<&str> = list["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["site"].as_str().unwrap())
        .collect();
    assert!(
        !sites.contains(&"tenant=globex"),
        "globex holds a lot but does not grow: {sites:?}"
    );

    // A downloaded profile, uploaded back, groups the same way: the labels survive pprof.
    let heap = request_to(addr, "GET /debug/pprof/heap HTTP/1.1", b"").body;
    let r = request_to(
        addr,
        "POST /debug/pprof/ui/api/tree?group=tenant&type=inuse_space HTTP/1.1",
        &heap,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let uploaded: Value = serde_json::from_slice(&r.body).unwrap();
    let names: Vec<String> = first_level(&uploaded).into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"tenant=acme".to_string()) && names.contains(&"tenant=globex".into()),
        "{names:?}"
    );

    let long = "k".repeat(200);
    for bad in ["group=%01", &format!("group={long}")] {
        for endpoint in ["tree", "growing"] {
            let path = format!("/debug/pprof/ui/api/{endpoint}?{bad}");
            let r = request_to(addr, &format!("GET {path} HTTP/1.1"), b"");
            assert_eq!(r.status, 400, "{path}: {}", r.text());
            assert!(r.text().contains("group"), "{}", r.text());
        }
    }
    drop((unlabelled, steady, growing));
}
