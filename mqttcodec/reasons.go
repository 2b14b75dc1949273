package mqttcodec

// ReasonCode is an MQTT 5 reason code (MQTT 5.0 section 2.4). For v3.1 and
// v3.1.1 packets that carry a return code (CONNACK, SUBACK) the decoded
// v3 byte is stored in a ReasonCode unchanged; see V3ConnackCode and
// V3SubackCode for the other direction.
type ReasonCode byte

// Reason codes of MQTT 5.0, table 2-6. Several share a value.
const (
	Success                             ReasonCode = 0x00
	NormalDisconnection                 ReasonCode = 0x00
	GrantedQoS0                         ReasonCode = 0x00
	GrantedQoS1                         ReasonCode = 0x01
	GrantedQoS2                         ReasonCode = 0x02
	DisconnectWithWill                  ReasonCode = 0x04
	NoMatchingSubscribers               ReasonCode = 0x10
	NoSubscriptionExisted               ReasonCode = 0x11
	ContinueAuthentication              ReasonCode = 0x18
	ReAuthenticate                      ReasonCode = 0x19
	UnspecifiedError                    ReasonCode = 0x80
	MalformedPacket                     ReasonCode = 0x81
	ProtocolError                       ReasonCode = 0x82
	ImplementationSpecificError         ReasonCode = 0x83
	UnsupportedProtocolVersion          ReasonCode = 0x84
	ClientIdentifierNotValid            ReasonCode = 0x85
	BadUserNameOrPassword               ReasonCode = 0x86
	NotAuthorized                       ReasonCode = 0x87
	ServerUnavailable                   ReasonCode = 0x88
	ServerBusy                          ReasonCode = 0x89
	Banned                              ReasonCode = 0x8A
	ServerShuttingDown                  ReasonCode = 0x8B
	BadAuthenticationMethod             ReasonCode = 0x8C
	KeepAliveTimeout                    ReasonCode = 0x8D
	SessionTakenOver                    ReasonCode = 0x8E
	TopicFilterInvalid                  ReasonCode = 0x8F
	TopicNameInvalid                    ReasonCode = 0x90
	PacketIdentifierInUse               ReasonCode = 0x91
	PacketIdentifierNotFound            ReasonCode = 0x92
	ReceiveMaximumExceeded              ReasonCode = 0x93
	TopicAliasInvalid                   ReasonCode = 0x94
	PacketTooLarge                      ReasonCode = 0x95
	MessageRateTooHigh                  ReasonCode = 0x96
	QuotaExceeded                       ReasonCode = 0x97
	AdministrativeAction                ReasonCode = 0x98
	PayloadFormatInvalid                ReasonCode = 0x99
	RetainNotSupported                  ReasonCode = 0x9A
	QoSNotSupported                     ReasonCode = 0x9B
	UseAnotherServer                    ReasonCode = 0x9C
	ServerMoved                         ReasonCode = 0x9D
	SharedSubscriptionsNotSupported     ReasonCode = 0x9E
	ConnectionRateExceeded              ReasonCode = 0x9F
	MaximumConnectTime                  ReasonCode = 0xA0
	SubscriptionIdentifiersNotSupported ReasonCode = 0xA1
	WildcardSubscriptionsNotSupported   ReasonCode = 0xA2
)

var reasonNames = [256]string{
	0x00: "success",
	0x01: "granted qos 1",
	0x02: "granted qos 2",
	0x04: "disconnect with will message",
	0x10: "no matching subscribers",
	0x11: "no subscription existed",
	0x18: "continue authentication",
	0x19: "re-authenticate",
	0x80: "unspecified error",
	0x81: "malformed packet",
	0x82: "protocol error",
	0x83: "implementation specific error",
	0x84: "unsupported protocol version",
	0x85: "client identifier not valid",
	0x86: "bad user name or password",
	0x87: "not authorized",
	0x88: "server unavailable",
	0x89: "server busy",
	0x8A: "banned",
	0x8B: "server shutting down",
	0x8C: "bad authentication method",
	0x8D: "keep alive timeout",
	0x8E: "session taken over",
	0x8F: "topic filter invalid",
	0x90: "topic name invalid",
	0x91: "packet identifier in use",
	0x92: "packet identifier not found",
	0x93: "receive maximum exceeded",
	0x94: "topic alias invalid",
	0x95: "packet too large",
	0x96: "message rate too high",
	0x97: "quota exceeded",
	0x98: "administrative action",
	0x99: "payload format invalid",
	0x9A: "retain not supported",
	0x9B: "qos not supported",
	0x9C: "use another server",
	0x9D: "server moved",
	0x9E: "shared subscriptions not supported",
	0x9F: "connection rate exceeded",
	0xA0: "maximum connect time",
	0xA1: "subscription identifiers not supported",
	0xA2: "wildcard subscriptions not supported",
}

// String returns the lower-case name of the reason code, as in the MQTT 5
// table (0x00 is "success" whatever the packet), or "reason 0xNN" for a
// value MQTT 5 does not define.
func (r ReasonCode) String() string {
	if s := reasonNames[r]; s != "" {
		return s
	}
	return "reason " + hex2(byte(r))
}

// IsError reports whether r is a failure code (>= 0x80) [MQTT 5.0 2.4].
func (r ReasonCode) IsError() bool { return r >= 0x80 }

// V3ConnackCode maps a reason to the MQTT 3.1/3.1.1 CONNACK return code, so
// a v3 client never receives a v5 byte [MQTT-3.2.2-4 v3.1.1]:
//
//	0 accepted                           Success
//	1 unacceptable protocol version      UnsupportedProtocolVersion
//	2 identifier rejected                ClientIdentifierNotValid
//	3 server unavailable                 ServerUnavailable, ServerBusy, ServerShuttingDown,
//	                                     UseAnotherServer, ServerMoved, ConnectionRateExceeded,
//	                                     and every other failure (the generic refusal)
//	4 bad user name or password          BadUserNameOrPassword
//	5 not authorized                     NotAuthorized, Banned, BadAuthenticationMethod
//
// Values 1..5 are already v3 return codes (MQTT 5 has no CONNACK reason code
// in that range) and are returned unchanged, so a Connack decoded from a v3
// peer re-encodes as it came.
func V3ConnackCode(r ReasonCode) byte {
	switch r {
	case Success, 1, 2, 3, 4, 5:
		return byte(r)
	case UnsupportedProtocolVersion:
		return 1
	case ClientIdentifierNotValid:
		return 2
	case BadUserNameOrPassword:
		return 4
	case NotAuthorized, Banned, BadAuthenticationMethod:
		return 5
	default:
		return 3
	}
}

// V3SubackCode maps a SUBACK reason to the MQTT 3.1.1 return code: the
// granted QoS 0, 1 or 2, or 0x80 for any failure [MQTT-3.9.3-2 v3.1.1].
// (MQTT 3.1 has no failure code; a server talking to a 3.1 client should
// close the connection instead of refusing one filter.)
func V3SubackCode(r ReasonCode) byte {
	if r <= GrantedQoS2 {
		return byte(r)
	}
	return 0x80
}

// Which reason codes each packet may carry (MQTT 5.0, sections 3.x.2.1).
var (
	connackReasons = reasonSet(0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
		0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F)
	pubackReasons     = reasonSet(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99) // PUBACK, PUBREC
	pubrelReasons     = reasonSet(0x00, 0x92)                                           // PUBREL, PUBCOMP
	subackReasons     = reasonSet(0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2)
	unsubackReasons   = reasonSet(0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91)
	disconnectReasons = reasonSet(0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E,
		0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2)
	authReasons   = reasonSet(0x00, 0x18, 0x19)
	v3SubackCodes = reasonSet(0x00, 0x01, 0x02, 0x80)
)

// reasons is a 256-bit set of reason codes.
type reasons [4]uint64

func reasonSet(codes ...byte) reasons {
	var s reasons
	for _, c := range codes {
		s[c>>6] |= 1 << (c & 63)
	}
	return s
}

func (s *reasons) has(r ReasonCode) bool { return s[r>>6]&(1<<(r&63)) != 0 }

// ValidReason reports whether MQTT 5 allows reason code r in a packet of
// type pkt (CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK,
// DISCONNECT or AUTH). The decoders reject any other value as a malformed
// packet.
func ValidReason(pkt byte, r ReasonCode) bool {
	switch pkt {
	case CONNACK:
		return connackReasons.has(r)
	case PUBACK, PUBREC:
		return pubackReasons.has(r)
	case PUBREL, PUBCOMP:
		return pubrelReasons.has(r)
	case SUBACK:
		return subackReasons.has(r)
	case UNSUBACK:
		return unsubackReasons.has(r)
	case DISCONNECT:
		return disconnectReasons.has(r)
	case AUTH:
		return authReasons.has(r)
	}
	return false
}
