//! One DNS message in, one decision out: [`answer`] turns a request into an authoritative
//! response from the [`Index`], or says that it must be forwarded; [`encode`] fits a response to
//! what the client can receive. No I/O here.

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::records::{Index, Lookup};

/// The largest UDP payload we advertise and send: the DNS Flag Day 2020 value, which avoids IP
/// fragmentation on common paths.
pub const UDP_PAYLOAD: u16 = 1232;
/// The limit without EDNS (RFC 1035 §4.2.1).
const CLASSIC_UDP: usize = 512;

/// What to do with a request.
#[derive(Debug)]
pub enum Outcome {
    /// Send this response.
    Reply(Message),
    /// Not ours: ask the upstream this question and relay its answer.
    Forward,
    /// An ExternalName alias: this CNAME response, completed with the upstream's answer for
    /// `target` (DNS spec §2.5 shows the target's records in the answer).
    Chase {
        response: Message,
        target: Name,
        qtype: RecordType,
    },
}

/// Decides what `request` gets from `index`.
pub fn answer(index: &Index, request: &Message) -> Outcome {
    if request.op_code != OpCode::Query {
        return Outcome::Reply(error(request, ResponseCode::NotImp));
    }
    // Every resolver sends one question; RFC 9619 makes more than one a FORMERR.
    let [query] = request.queries.as_slice() else {
        return Outcome::Reply(error(request, ResponseCode::FormErr));
    };
    // EDNS versions above 0 are unknown to us (RFC 6891 §6.1.3).
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return Outcome::Reply(error(request, ResponseCode::BADVERS));
    }
    let lookup = index.lookup(query.name(), query.query_type());
    if matches!(lookup, Lookup::NotOurs) {
        return Outcome::Forward;
    }
    let mut response = response_to(request);
    response.metadata.authoritative = true;
    if query.query_class() != DNSClass::IN {
        // The cluster zone exists in class IN only.
        response.metadata.authoritative = false;
        response.metadata.response_code = ResponseCode::Refused;
        return Outcome::Reply(response);
    }
    match lookup {
        Lookup::Answer {
            answers,
            additionals,
        } => {
            response.answers = answers;
            response.additionals = additionals;
        }
        Lookup::External { cname, target } => {
            response.answers = vec![cname];
            return Outcome::Chase {
                response,
                target,
                qtype: query.query_type(),
            };
        }
        Lookup::NoData(soa) => response.authorities = vec![soa],
        Lookup::NxDomain(soa) => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.authorities = vec![soa];
        }
        Lookup::NotOurs => return Outcome::Forward,
    }
    Outcome::Reply(response)
}

/// An empty response to `request`: its id, question, RD and CD bits, and an OPT record when it
/// had one (RFC 6891 §6.1.1: responders to an EDNS request include one). RA is the server's to
/// set: it depends on whether there is an upstream to recurse through.
pub fn response_to(request: &Message) -> Message {
    let mut response = Message::response(request.id, request.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        response.edns = Some(edns);
    }
    response
}

/// A response with only a code.
pub fn error(request: &Message, code: ResponseCode) -> Message {
    let mut response = response_to(request);
    response.metadata.response_code = code;
    response
}

/// FORMERR for a packet that did not decode, when it is worth answering: it has a header and is
/// a query (a response is never answered, so two servers cannot loop). Answered from the raw
/// header because nothing else of it can be trusted.
pub fn formerr_for(packet: &[u8]) -> Option<Vec<u8>> {
    // The header is 12 bytes; QR (the top bit of byte 2) set means a response.
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let mut response = Message::new(
        u16::from_be_bytes([packet[0], packet[1]]),
        MessageType::Response,
        OpCode::from_u8((packet[2] >> 3) & 0x0f),
    );
    response.metadata.response_code = ResponseCode::FormErr;
    response.to_vec().ok()
}

/// How many bytes a UDP response to `request` may have: 512 without EDNS, else what the client
/// advertised, capped at ours (RFC 6891 §6.2.5).
pub fn udp_limit(request: &Message) -> usize {
    match &request.edns {
        Some(edns) => usize::from(edns.max_payload().clamp(512, UDP_PAYLOAD)),
        None => CLASSIC_UDP,
    }
}

/// `response` on the wire within `limit` bytes. When the whole does not fit, it is truncated
/// (TC set) to the answers that fit, without authority or additional records, keeping the OPT
/// record: clients then retry over TCP (RFC 2181 §9), and those that cannot (musl) still get
/// some addresses. Sizes are measured encoded, so name compression counts.
pub fn encode(response: &Message, limit: usize) -> Result<Vec<u8>, hickory_proto::ProtoError> {
    let full = response.to_vec()?;
    if full.len() <= limit {
        return Ok(full);
    }
    let mut truncated = response.clone();
    truncated.metadata.truncation = true;
    truncated.authorities.clear();
    truncated.additionals.clear();
    let answers = std::mem::take(&mut truncated.answers);
    // The largest prefix of the answers that fits: encoded length grows with the count.
    let (mut fits, mut too_many) = (0, answers.len() + 1);
    let mut best = truncated.to_vec()?;
    while too_many - fits > 1 {
        let middle = (fits + too_many) / 2;
        truncated.answers = answers[..middle].to_vec();
        let bytes = truncated.to_vec()?;
        if bytes.len() <= limit {
            fits = middle;
            best = bytes;
        } else {
            too_many = middle;
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Record;
    use k8s_openapi::api::core::v1::{Service, ServiceSpec};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn index() -> Index {
        let service = Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.10".into()),
                cluster_ips: Some(vec!["10.96.0.10".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let zone = Name::from_ascii("cluster.local.").expect("a name");
        Index::build(&zone, [&service], [] as [&EndpointSlice; 0], 1)
    }

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("a name"), qtype));
        m
    }

    fn reply(outcome: Outcome) -> Message {
        match outcome {
            Outcome::Reply(m) => m,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn in_zone_answers_are_authoritative() {
        let request = query("web.default.svc.cluster.local.", RecordType::A);
        let response = reply(answer(&index(), &request));
        assert_eq!(response.id, request.id);
        assert!(response.authoritative);
        assert!(response.recursion_desired);
        assert_eq!(response.message_type, MessageType::Response);
        assert_eq!(response.response_code, ResponseCode::NoError);
        assert_eq!(response.answers.len(), 1);
        assert_eq!(response.queries, request.queries);
    }

    #[test]
    fn nodata_and_nxdomain_differ_in_code_and_both_carry_soa() {
        let nodata = reply(answer(
            &index(),
            &query("web.default.svc.cluster.local.", RecordType::AAAA),
        ));
        assert_eq!(nodata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
        let nx = reply(answer(
            &index(),
            &query("nope.default.svc.cluster.local.", RecordType::A),
        ));
        assert_eq!(nx.response_code, ResponseCode::NXDomain);
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
        assert!(nx.authoritative);
    }

    #[test]
    fn other_names_are_forwarded() {
        assert!(matches!(
            answer(&index(), &query("example.com.", RecordType::A)),
            Outcome::Forward
        ));
    }

    #[test]
    fn odd_requests_get_error_codes() {
        let mut two = query("a.cluster.local.", RecordType::A);
        two.add_query(Query::query(
            Name::from_ascii("b.cluster.local.").expect("a name"),
            RecordType::A,
        ));
        assert_eq!(
            reply(answer(&index(), &two)).response_code,
            ResponseCode::FormErr
        );
        let mut update = query("a.cluster.local.", RecordType::A);
        update.metadata.op_code = OpCode::Update;
        assert_eq!(
            reply(answer(&index(), &update)).response_code,
            ResponseCode::NotImp
        );
        let mut chaos = query("web.default.svc.cluster.local.", RecordType::A);
        chaos.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(
            reply(answer(&index(), &chaos)).response_code,
            ResponseCode::Refused
        );
    }

    #[test]
    fn edns_is_echoed_and_sets_the_udp_limit() {
        let mut request = query("web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(udp_limit(&request), 512);
        assert!(reply(answer(&index(), &request)).edns.is_none());
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        request.set_edns(edns);
        assert_eq!(udp_limit(&request), usize::from(UDP_PAYLOAD));
        let response = reply(answer(&index(), &request));
        assert_eq!(
            response.edns.as_ref().map(Edns::max_payload),
            Some(UDP_PAYLOAD)
        );
        let mut future = Edns::new();
        future.set_version(1);
        request.set_edns(future);
        assert_eq!(
            reply(answer(&index(), &request)).response_code,
            ResponseCode::BADVERS
        );
    }

    #[test]
    fn large_responses_are_truncated_to_what_fits() {
        let request = query("many.default.svc.cluster.local.", RecordType::A);
        let mut response = response_to(&request);
        for i in 0..200u8 {
            response.answers.push(Record::from_rdata(
                request.queries[0].name().clone(),
                30,
                hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A([10, 0, 0, i].into())),
            ));
        }
        let bytes = encode(&response, 512).expect("encodes");
        assert!(bytes.len() <= 512);
        let decoded = Message::from_vec(&bytes).expect("decodes");
        assert!(decoded.truncation);
        // Each compressed A record is 16 bytes; most of 512 is used.
        assert!(decoded.answers.len() > 20, "{}", decoded.answers.len());
        let whole =
            Message::from_vec(&encode(&response, 65535).expect("encodes")).expect("decodes");
        assert!(!whole.truncation);
        assert_eq!(whole.answers.len(), 200);
    }

    #[test]
    fn garbage_gets_formerr_only_when_it_looks_like_a_query() {
        let mut packet = vec![0x12, 0x34, 0x00, 0x00, 0, 5, 0, 0, 0, 0, 0, 0, 0xff];
        let bytes = formerr_for(&packet).expect("a FORMERR");
        let response = Message::from_vec(&bytes).expect("decodes");
        assert_eq!(response.id, 0x1234);
        assert_eq!(response.response_code, ResponseCode::FormErr);
        packet[2] = 0x80;
        assert!(formerr_for(&packet).is_none());
        assert!(formerr_for(&[1, 2, 3]).is_none());
    }
}
