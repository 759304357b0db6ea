//! Runnable example (as root): program a VIP in a scratch network namespace, drain a backend,
//! read the services back, and clean up. `cargo run -p shoal-ipvs-lb --example balance`.

// An example program: it shows what it did on standard output.
#![allow(clippy::print_stdout)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;

use shoal_ipvs_lb::{Backend, Netns, Service, ServiceKey};

/// A scratch namespace, deleted on drop. The `shoaltest-` prefix lets `cargo xtask clean` sweep
/// it if the example is killed.
struct Scratch(String);

impl Scratch {
    fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let name = format!("shoaltest-example-{}", std::process::id());
        let status = Command::new("ip").args(["netns", "add", &name]).status()?;
        if !status.success() {
            return Err(format!("ip netns add {name} failed ({status}); run as root").into());
        }
        Ok(Self(name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = Scratch::new()?;
    let netns = Netns::named(&scratch.0);

    // IPVS where the kernel has it, nftables otherwise.
    let mut lb = shoal_ipvs_lb::open(&netns, "shoal_lb")?;
    println!("{} load balancer in {netns}", lb.kind());

    let web = ServiceKey::tcp(Ipv4Addr::new(198, 18, 0, 10), 80);
    let task = |last| Backend::new(Ipv4Addr::new(198, 18, 1, last), 8080);
    lb.set(&[Service::new(web, vec![task(11), task(12), Backend { weight: 2, ..task(13) }])])?;
    lb.drain(&web, SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 12), 8080))?;

    for service in lb.list()? {
        println!("{}{}", service.key, if service.source_nat { " (source NAT)" } else { "" });
        for backend in &service.backends {
            println!("  -> {} weight {}", backend.socket_addr(), backend.weight);
        }
    }
    lb.remove(&[web])?;
    println!("removed {web}; {} services left", lb.list()?.len());
    Ok(())
}
