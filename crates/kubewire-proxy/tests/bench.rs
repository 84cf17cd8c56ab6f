//! `kubewire bench proxy` loads both layouts into the real kernel (needs root).

use kubewire_datapath::testutil;

#[test]
fn both_layouts_load_and_take_an_endpoint_change() {
    if !testutil::root_or_skip("both_layouts_load_and_take_an_endpoint_change") {
        return;
    }
    let report = kubewire_proxy::bench::bench_proxy(20, 3).expect("the benchmark runs");
    // Ours is a fixed set of chains whatever the size; the peer has one chain per Service and
    // per endpoint, plus its three fixed ones.
    assert_eq!(report.ours.chains, 15, "{report}");
    assert_eq!(report.peer.chains, 20 * (3 + 1) + 3, "{report}");
    assert!(
        report.ours.change_bytes < 1024,
        "an endpoint change is a few elements: {report}"
    );
    println!("{report}");
}
