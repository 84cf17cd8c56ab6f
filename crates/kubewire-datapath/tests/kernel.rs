//! Against the real kernel, inside throw-away namespaces.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use kubewire_datapath::{Mac, NetNs, Netlink, OwnedNetNs, Route, VethSpec, sysctl, testutil};

#[test]
fn netns_create_enter_delete() {
    if !testutil::root_or_skip("netns_create_enter_delete") {
        return;
    }
    let name = testutil::unique_name("life");
    let here = NetNs::current().unwrap();
    {
        let ns = OwnedNetNs::create(&name).unwrap();
        assert!(!ns.same_as(&here).unwrap());
        {
            let _g = ns.enter().unwrap();
            assert!(NetNs::current().unwrap().same_as(&ns).unwrap());
            // A fresh namespace has only a (down) loopback.
            let nl = Netlink::open().unwrap();
            let links = nl.links().unwrap();
            assert_eq!(links.len(), 1, "{links:?}");
            assert!(!links[0].up);
        }
        assert!(NetNs::current().unwrap().same_as(&here).unwrap());
        let inside = ns.run(|| NetNs::current().unwrap().id().unwrap()).unwrap();
        assert_eq!(inside, ns.id().unwrap());
        // Creating the same name again fails with EEXIST.
        assert!(NetNs::create_named(&name).unwrap_err().is_exists());
    }
    assert!(!std::path::Path::new("/run/netns").join(&name).exists());
    NetNs::delete_named(&name).unwrap(); // idempotent
}

#[test]
fn veth_addresses_routes_neighbours_carry_tcp() {
    if !testutil::root_or_skip("veth_addresses_routes_neighbours_carry_tcp") {
        return;
    }
    let a = testutil::netns("dpa");
    let b = testutil::netns("dpb");
    let nla = Netlink::open_in(&a).unwrap();
    let nlb = Netlink::open_in(&b).unwrap();
    let mac_a: Mac = "02:00:00:00:00:0a".parse().unwrap();
    let mac_b: Mac = "02:00:00:00:00:0b".parse().unwrap();
    nla.add_veth(&VethSpec {
        name: "va",
        mac: Some(mac_a),
        peer_name: "vb",
        peer_mac: Some(mac_b),
        peer_netns: Some(&b),
        mtu: Some(1400),
        up: true,
    })
    .unwrap();
    let la = nla.link("va").unwrap().expect("va in a");
    let lb = nlb.link("vb").unwrap().expect("vb moved into b");
    assert!(nla.link("vb").unwrap().is_none());
    assert!(!lb.up, "the peer is created down");
    nlb.set_link_up(lb.index, true).unwrap();
    let lb = nlb.link("vb").unwrap().unwrap();
    assert_eq!((la.mac, lb.mac), (Some(mac_a), Some(mac_b)));
    assert_eq!((la.mtu, lb.mtu), (Some(1400), Some(1400)));
    assert!(la.up && lb.up);
    assert_eq!(la.kind.as_deref(), Some("veth"));

    // Point-to-point /32 and /128, no connected prefix: routes and neighbours do all the work.
    for (nl, link, own, peer, peer_mac) in [
        (&nla, &la, "192.0.2.1", "192.0.2.2", mac_b),
        (&nlb, &lb, "192.0.2.2", "192.0.2.1", mac_a),
        (&nla, &la, "2001:db8::1", "2001:db8::2", mac_b),
        (&nlb, &lb, "2001:db8::2", "2001:db8::1", mac_a),
    ] {
        let own: IpAddr = own.parse().unwrap();
        let peer: IpAddr = peer.parse().unwrap();
        nl.add_address(link.index, ipnet::IpNet::from(own), true)
            .unwrap();
        nl.add_route(&Route::direct(ipnet::IpNet::from(peer), link.index))
            .unwrap();
        nl.set_neighbour(link.index, peer, peer_mac).unwrap();
    }
    let addrs = nla.addresses(Some(la.index)).unwrap();
    assert!(
        addrs.iter().any(|(_, n)| n.to_string() == "192.0.2.1/32"),
        "{addrs:?}"
    );
    assert!(
        addrs
            .iter()
            .any(|(_, n)| n.to_string() == "2001:db8::1/128"),
        "{addrs:?}"
    );
    let routes = nla.routes(false, 254).unwrap();
    assert!(
        routes.iter().any(|r| r.dst.to_string() == "192.0.2.2/32"
            && r.oif == Some(la.index)
            && r.scope_link),
        "{routes:?}"
    );
    let neigh = nla.neighbours(la.index).unwrap();
    assert!(
        neigh
            .iter()
            .any(|n| n.ip.to_string() == "192.0.2.2" && n.mac == Some(mac_b) && n.permanent),
        "{neigh:?}"
    );
    // Adding the same route twice reports EEXIST.
    let err = nla
        .add_route(&Route::direct("192.0.2.2/32".parse().unwrap(), la.index))
        .unwrap_err();
    assert!(err.is_exists(), "{err}");

    for server_ip in ["192.0.2.2", "2001:db8::2"] {
        let listener = b
            .run(|| TcpListener::bind(SocketAddr::new(server_ip.parse().unwrap(), 0)).unwrap())
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let got = a
            .run(move || {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
                s.write_all(b"ping").unwrap();
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).unwrap();
                buf
            })
            .unwrap();
        assert_eq!(&got, b"ping");
        server.join().unwrap();
    }

    // Deleting one end removes the pair.
    assert!(nla.delete_link_by_name("va").unwrap());
    assert!(nlb.link("vb").unwrap().is_none());
    assert!(!nla.delete_link_by_name("va").unwrap());
}

#[test]
fn sysctls_are_per_namespace() {
    if !testutil::root_or_skip("sysctls_are_per_namespace") {
        return;
    }
    let ns = testutil::netns("sys");
    let outside = sysctl::read("net/ipv4/ip_forward").unwrap();
    ns.run(|| {
        assert_eq!(sysctl::read("net/ipv4/ip_forward").unwrap(), "0");
        sysctl::enable_ipv4_forwarding().unwrap();
        assert_eq!(sysctl::read("net/ipv4/ip_forward").unwrap(), "1");
    })
    .unwrap();
    assert_eq!(sysctl::read("net/ipv4/ip_forward").unwrap(), outside);
}

#[test]
fn multipath_routes_spread_over_every_gateway() {
    if !testutil::root_or_skip("multipath_routes_spread_over_every_gateway") {
        return;
    }
    let ns = testutil::netns("dpm");
    let nl = Netlink::open_in(&ns).unwrap();
    nl.add_bridge("br0").unwrap();
    let br = nl.link("br0").unwrap().unwrap().index;
    nl.add_address(br, "198.51.100.1/24".parse().unwrap(), true)
        .unwrap();
    nl.add_address(br, "2001:db8:51::1/64".parse().unwrap(), true)
        .unwrap();
    nl.set_link_up(br, true).unwrap();
    let v4: Vec<IpAddr> = vec![
        "198.51.100.10".parse().unwrap(),
        "198.51.100.11".parse().unwrap(),
    ];
    nl.replace_multipath_route("203.0.113.0/24".parse().unwrap(), &v4, br)
        .unwrap();
    // Replacing is idempotent (the lab re-runs it).
    nl.replace_multipath_route("203.0.113.0/24".parse().unwrap(), &v4, br)
        .unwrap();
    let v6: Vec<IpAddr> = vec![
        "2001:db8:51::10".parse().unwrap(),
        "2001:db8:51::11".parse().unwrap(),
    ];
    nl.replace_multipath_route("2001:db8:ff::/112".parse().unwrap(), &v6, br)
        .unwrap();
    assert!(
        nl.replace_multipath_route("203.0.113.0/24".parse().unwrap(), &v6, br)
            .is_err(),
        "families must match"
    );
    let show = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["-n", ns.name()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let routes = show(&["route", "show", "203.0.113.0/24"]);
    for gw in ["198.51.100.10", "198.51.100.11"] {
        assert!(
            routes.contains(&format!("nexthop via {gw} dev br0")),
            "{routes}"
        );
    }
    let routes = show(&["-6", "route", "show", "2001:db8:ff::/112"]);
    for gw in ["2001:db8:51::10", "2001:db8:51::11"] {
        assert!(
            routes.contains(&format!("nexthop via {gw} dev br0")),
            "{routes}"
        );
    }
}
