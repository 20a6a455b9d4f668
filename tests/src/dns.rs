//! A real authoritative DNS server (hickory's) on a loopback address, for
//! the MX paths. It serves one zone from zone-file text.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::rr::{LowerName, Name};
use hickory_proto::serialize::txt::Parser;
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

pub struct DnsServer {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<(String, String)>>>,
    catalog: Arc<tokio::sync::RwLock<Catalog>>,
}

impl DnsServer {
    /// Every question asked so far: (name, type), e.g. ("a.test.", "AAAA").
    pub fn queries(&self) -> Vec<(String, String)> {
        self.log.lock().unwrap().clone()
    }

    /// Serves `zone` for `origin` from now on (a zone edited in place: a
    /// new TXT record id, a moved MX).
    pub fn replace(&self, origin: &str, zone: &str) {
        let (name, handler) = zone_handler(origin, zone);
        self.catalog
            .blocking_write()
            .upsert(LowerName::from(name), vec![Arc::new(handler)]);
    }
}

fn zone_handler(
    origin: &str,
    zone: &str,
) -> (
    Name,
    InMemoryZoneHandler<hickory_server::net::runtime::TokioRuntimeProvider>,
) {
    let origin = Name::from_ascii(origin).expect("origin");
    let (name, records) = Parser::new(zone.to_string(), None, Some(origin))
        .parse()
        .expect("zone text parses");
    let handler =
        InMemoryZoneHandler::new(name.clone(), records, ZoneType::Primary, AxfrPolicy::Deny)
            .expect("zone");
    (name, handler)
}

/// The catalog, with a log of the questions it was asked.
struct Logged {
    catalog: Arc<tokio::sync::RwLock<Catalog>>,
    log: Arc<Mutex<Vec<(String, String)>>>,
}

#[async_trait::async_trait]
impl RequestHandler for Logged {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if let Ok(info) = request.request_info() {
            self.log.lock().unwrap().push((
                info.query.name().to_string(),
                info.query.query_type().to_string(),
            ));
        }
        self.catalog
            .read()
            .await
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// Starts a server for `origin` (e.g. "test.") on `ip`, on a free port,
/// serving `zone` (zone-file syntax, relative to the origin).
pub fn start(ip: &str, origin: &str, zone: &str) -> DnsServer {
    start_zones(ip, &[(origin, zone)])
}

/// Starts a server for several zones (each with its origin). Names
/// outside them are refused, which a resolver takes as a temporary
/// failure (SERVFAIL-like).
pub fn start_zones(ip: &str, zones: &[(&str, &str)]) -> DnsServer {
    start_zones_at(ip, 0, zones)
}

/// As [`start_zones`], on `port` (53 for programs that read
/// /etc/resolv.conf, which has no port).
pub fn start_zones_at(ip: &str, port: u16, zones: &[(&str, &str)]) -> DnsServer {
    let udp = std::net::UdpSocket::bind((ip, port)).expect("bind DNS UDP");
    let port = udp.local_addr().unwrap().port();
    let tcp = std::net::TcpListener::bind((ip, port)).expect("bind DNS TCP on the same port");
    udp.set_nonblocking(true).unwrap();
    tcp.set_nonblocking(true).unwrap();
    let addr = udp.local_addr().unwrap();
    let mut catalog = Catalog::new();
    for (origin, zone) in zones {
        let (name, handler) = zone_handler(origin, zone);
        catalog.upsert(LowerName::from(name), vec![Arc::new(handler)]);
    }
    let catalog = Arc::new(tokio::sync::RwLock::new(catalog));
    let server_catalog = catalog.clone();
    let log: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let server_log = log.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut server = Server::new(Logged {
                catalog: server_catalog,
                log: server_log,
            });
            server.register_socket(tokio::net::UdpSocket::from_std(udp).unwrap());
            server.register_listener(
                tokio::net::TcpListener::from_std(tcp).unwrap(),
                Duration::from_secs(5),
                64 * 1024,
            );
            let _ = server.block_until_done().await;
        });
    });
    DnsServer { addr, log, catalog }
}
