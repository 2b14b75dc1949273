package mqttcodec

import (
	"bytes"
	"errors"
	"testing"
)

// A golden wire fixture: hand-annotated bytes and the struct they decode
// to. Unless decodeOnly is set, encoding want for each version must give
// back wire byte for byte.
type fixture struct {
	name       string
	versions   []byte // protocol levels the bytes are valid for
	wire       []byte
	want       any
	decodeOnly bool // a valid but non-canonical encoding (the encoder writes a shorter form)
}

var (
	v3only  = []byte{Version31, Version311}
	v31     = []byte{Version31}
	v311    = []byte{Version311}
	v5only  = []byte{Version5}
	allVers = []byte{Version31, Version311, Version5}
)

// Payloads of 200 and 20,000 bytes, for two- and three-byte Remaining
// Lengths.
var (
	payload200   = bytes.Repeat([]byte("0123456789"), 20)
	payload20000 = bytes.Repeat([]byte("abcdefghij"), 2000)
)

var fixtures = []fixture{
	// ---------------------------------------------------------------- CONNECT
	{name: "CONNECT/v3.1/MQIsdp", versions: v31, wire: h(`
		10 12                    // CONNECT, remaining length 18
		00 06 4d 51 49 73 64 70  // protocol name "MQIsdp"
		03                       // protocol level 3
		02                       // connect flags: clean session
		00 3c                    // keep alive 60 s
		00 04 64 65 76 31        // client identifier "dev1"
	`), want: &Connect{ProtocolName: []byte("MQIsdp"), Version: 3, CleanStart: true, KeepAlive: 60, ClientID: []byte("dev1")}},

	{name: "CONNECT/v3.1.1/minimal", versions: v311, wire: h(`
		10 0c                    // CONNECT, remaining length 12
		00 04 4d 51 54 54        // protocol name "MQTT"
		04                       // protocol level 4
		02                       // connect flags: clean session
		00 00                    // keep alive 0 (off)
		00 00                    // client identifier "" (allowed with clean session)
	`), want: &Connect{ProtocolName: []byte("MQTT"), Version: 4, CleanStart: true, ClientID: []byte{}}},

	{name: "CONNECT/v3.1.1/will-user-password", versions: v311, wire: h(`
		10 35                    // CONNECT, remaining length 53
		00 04 4d 51 54 54        // "MQTT"
		04                       // level 4
		ee                       // flags: user name, password, will retain, will qos 1, will, clean session
		00 0a                    // keep alive 10 s
		00 04 64 65 76 32        // client identifier "dev2"
		00 0b 73 74 61 74 75 73 2f 64 65 76 32  // will topic "status/dev2"
		00 07 6f 66 66 6c 69 6e 65              // will payload "offline"
		00 05 61 6c 69 63 65     // user name "alice"
		00 06 73 33 63 72 33 74  // password "s3cr3t"
	`), want: &Connect{ProtocolName: []byte("MQTT"), Version: 4, CleanStart: true, KeepAlive: 10, ClientID: []byte("dev2"),
		WillFlag: true, WillQoS: 1, WillRetain: true, WillTopic: []byte("status/dev2"), WillPayload: []byte("offline"),
		UsernameFlag: true, Username: []byte("alice"), PasswordFlag: true, Password: []byte("s3cr3t")}},

	{name: "CONNECT/v5/minimal", versions: v5only, wire: h(`
		10 0d                    // CONNECT, remaining length 13
		00 04 4d 51 54 54        // "MQTT"
		05                       // level 5
		00                       // flags: none (clean start 0)
		00 3c                    // keep alive 60 s
		00                       // property length 0
		00 00                    // client identifier "" (the server assigns one)
	`), want: &Connect{ProtocolName: []byte("MQTT"), Version: 5, KeepAlive: 60, ClientID: []byte{}}},

	{name: "CONNECT/v5/all-properties-will", versions: v5only, wire: h(`
		10 82 01                 // CONNECT, remaining length 130 (two-byte varint)
		00 04 4d 51 54 54        // "MQTT"
		05                       // level 5
		c6                       // flags: user name, password, will (qos 0, no retain), clean start
		00 1e                    // keep alive 30 s
		2f                       // property length 47
		  11 00 00 0e 10         //   session expiry interval 3600
		  15 00 05 54 4f 4b 45 4e //  authentication method "TOKEN"
		  16 00 02 01 02         //   authentication data 01 02
		  17 00                  //   request problem information 0
		  19 01                  //   request response information 1
		  21 00 14               //   receive maximum 20
		  22 00 0a               //   topic alias maximum 10
		  27 00 01 00 00         //   maximum packet size 65536
		  26 00 01 6b 00 01 76   //   user property k=v
		  26 00 01 6b 00 01 77   //   user property k=w (a repeat, kept in order)
		00 04 64 65 76 33        // client identifier "dev3"
		2d                       // will property length 45
		  01 01                  //   payload format indicator 1 (utf-8)
		  02 00 00 00 3c         //   message expiry interval 60
		  03 00 0a 74 65 78 74 2f 70 6c 61 69 6e  // content type "text/plain"
		  08 00 05 72 65 70 6c 79                 // response topic "reply"
		  09 00 02 ab cd         //   correlation data ab cd
		  18 00 00 00 05         //   will delay interval 5
		  26 00 01 61 00 01 62   //   user property a=b
		00 04 67 6f 6e 65        // will topic "gone"
		00 03 62 79 65           // will payload "bye"
		00 03 62 6f 62           // user name "bob"
		00 02 70 77              // password "pw"
	`), want: &Connect{ProtocolName: []byte("MQTT"), Version: 5, CleanStart: true, KeepAlive: 30,
		Props: mkProps(PropSessionExpiry, 3600, PropAuthMethod, "TOKEN", PropAuthData, "\x01\x02", PropRequestProblemInfo, 0,
			PropRequestResponseInfo, 1, PropReceiveMaximum, 20, PropTopicAliasMaximum, 10, PropMaximumPacketSize, 65536,
			PropUserProperty, [2]string{"k", "v"}, PropUserProperty, [2]string{"k", "w"}),
		ClientID: []byte("dev3"), WillFlag: true,
		WillProps: mkProps(PropPayloadFormat, 1, PropMessageExpiry, 60, PropContentType, "text/plain", PropResponseTopic, "reply",
			PropCorrelationData, "\xab\xcd", PropWillDelay, 5, PropUserProperty, [2]string{"a", "b"}),
		WillTopic: []byte("gone"), WillPayload: []byte("bye"),
		UsernameFlag: true, Username: []byte("bob"), PasswordFlag: true, Password: []byte("pw")}},

	{name: "CONNECT/v5/password-without-user-name", versions: v5only, wire: h(`
		10 13                    // CONNECT, remaining length 19
		00 04 4d 51 54 54        // "MQTT"
		05                       // level 5
		42                       // flags: password, clean start (no user name: allowed in v5)
		00 00                    // keep alive 0
		00                       // property length 0
		00 01 63                 // client identifier "c"
		00 03 6b 65 79           // password "key"
	`), want: &Connect{ProtocolName: []byte("MQTT"), Version: 5, CleanStart: true, ClientID: []byte("c"),
		PasswordFlag: true, Password: []byte("key")}},

	// ---------------------------------------------------------------- CONNACK
	{name: "CONNACK/v3/accepted", versions: v3only, wire: h(`
		20 02  // CONNACK, remaining length 2
		00     // acknowledge flags: no session present
		00     // return code 0: accepted
	`), want: &Connack{}},
	{name: "CONNACK/v3/session-present", versions: v3only, wire: h(`
		20 02 01 00  // CONNACK, session present, accepted
	`), want: &Connack{SessionPresent: true}},
	{name: "CONNACK/v3/not-authorized", versions: v3only, wire: h(`
		20 02 00 05  // CONNACK, return code 5: not authorized
	`), want: &Connack{Reason: 5}},
	{name: "CONNACK/v5/success", versions: v5only, wire: h(`
		20 03  // CONNACK, remaining length 3
		00     // no session present
		00     // reason code 0x00 success
		00     // property length 0
	`), want: &Connack{}},
	{name: "CONNACK/v5/all-properties", versions: v5only, wire: h(`
		20 3a                    // CONNACK, remaining length 58
		01                       // session present
		00                       // success
		37                       // property length 55
		  11 00 00 00 78         //   session expiry interval 120
		  12 00 04 61 75 74 6f   //   assigned client identifier "auto"
		  13 00 3c               //   server keep alive 60
		  1a 00 04 72 65 73 70   //   response information "resp"
		  1f 00 02 6f 6b         //   reason string "ok"
		  21 00 0a               //   receive maximum 10
		  22 00 05               //   topic alias maximum 5
		  24 01                  //   maximum qos 1
		  25 00                  //   retain available 0
		  27 00 00 10 00         //   maximum packet size 4096
		  28 01                  //   wildcard subscription available 1
		  29 00                  //   subscription identifiers available 0
		  2a 01                  //   shared subscription available 1
		  26 00 01 6b 00 01 76   //   user property k=v
	`), want: &Connack{SessionPresent: true, Props: mkProps(PropSessionExpiry, 120, PropAssignedClientID, "auto",
		PropServerKeepAlive, 60, PropResponseInfo, "resp", PropReasonString, "ok", PropReceiveMaximum, 10,
		PropTopicAliasMaximum, 5, PropMaximumQoS, 1, PropRetainAvailable, 0, PropMaximumPacketSize, 4096,
		PropWildcardSubAvailable, 1, PropSubIDAvailable, 0, PropSharedSubAvailable, 1, PropUserProperty, [2]string{"k", "v"})}},
	{name: "CONNACK/v5/server-moved", versions: v5only, wire: h(`
		20 10                    // CONNACK, remaining length 16
		00                       // no session present
		9d                       // reason 0x9D server moved
		0d                       // property length 13
		  1c 00 0a 6f 74 68 65 72 3a 31 38 38 33  // server reference "other:1883"
	`), want: &Connack{Reason: ServerMoved, Props: mkProps(PropServerReference, "other:1883")}},

	// ---------------------------------------------------------------- PUBLISH
	{name: "PUBLISH/qos0", versions: v3only, wire: h(`
		30 0a                    // PUBLISH qos 0, remaining length 10
		00 03 61 2f 62           // topic name "a/b"
		68 65 6c 6c 6f           // payload "hello"
	`), want: &Publish{Topic: []byte("a/b"), Payload: []byte("hello")}},
	{name: "PUBLISH/qos1-dup-retain", versions: v3only, wire: h(`
		3b 0c                    // PUBLISH dup, qos 1, retain; remaining length 12
		00 03 61 2f 62           // topic name "a/b"
		00 07                    // packet identifier 7
		68 65 6c 6c 6f           // payload "hello"
	`), want: &Publish{Dup: true, QoS: 1, Retain: true, Topic: []byte("a/b"), PacketID: 7, Payload: []byte("hello")}},
	{name: "PUBLISH/qos2", versions: v3only, wire: h(`
		34 08                    // PUBLISH qos 2, remaining length 8
		00 03 61 2f 62           // topic name "a/b"
		ff ff                    // packet identifier 65535
		21                       // payload "!"
	`), want: &Publish{QoS: 2, Topic: []byte("a/b"), PacketID: 65535, Payload: []byte("!")}},
	{name: "PUBLISH/retain-empty-payload", versions: v3only, wire: h(`
		31 05                    // PUBLISH qos 0 retain, remaining length 5
		00 03 61 2f 62           // topic name "a/b"; empty payload clears the retained message
	`), want: &Publish{Retain: true, Topic: []byte("a/b"), Payload: []byte{}}},
	{name: "PUBLISH/v3/200-byte-payload", versions: v3only, wire: cat(h(`
		32 cd 01                 // PUBLISH qos 1, remaining length 205 (0xcd 0x01: two bytes)
		00 01 74                 // topic name "t"
		00 01                    // packet identifier 1
	`), payload200), want: &Publish{QoS: 1, Topic: []byte("t"), PacketID: 1, Payload: payload200}},
	{name: "PUBLISH/v3/20000-byte-payload", versions: v3only, wire: cat(h(`
		30 a7 9c 01              // PUBLISH qos 0, remaining length 20007 (three bytes)
		00 05 62 69 67 2f 74     // topic name "big/t"
	`), payload20000), want: &Publish{Topic: []byte("big/t"), Payload: payload20000}},
	{name: "PUBLISH/v5/qos0-no-properties", versions: v5only, wire: h(`
		30 0b                    // PUBLISH qos 0, remaining length 11
		00 03 61 2f 62           // topic name "a/b"
		00                       // property length 0
		68 65 6c 6c 6f           // payload "hello"
	`), want: &Publish{Topic: []byte("a/b"), Payload: []byte("hello")}},
	{name: "PUBLISH/v5/qos1-all-properties", versions: v5only, wire: h(`
		32 4c                    // PUBLISH qos 1, remaining length 76
		00 03 64 2f 31           // topic name "d/1"
		00 2a                    // packet identifier 42
		42                       // property length 66
		  01 01                  //   payload format indicator 1
		  02 00 00 01 2c         //   message expiry interval 300
		  03 00 10 61 70 70 6c 69 63 61 74 69 6f 6e 2f 6a 73 6f 6e  // content type "application/json"
		  08 00 05 72 65 70 6c 79  // response topic "reply"
		  09 00 03 01 02 03      //   correlation data 01 02 03
		  23 00 07               //   topic alias 7
		  0b 05                  //   subscription identifier 5
		  0b 80 01               //   subscription identifier 128 (two-byte varint)
		  26 00 02 6b 31 00 02 76 31  // user property k1=v1
		  26 00 02 6b 31 00 02 76 32  // user property k1=v2
		7b 7d                    // payload "{}"
	`), want: &Publish{QoS: 1, Topic: []byte("d/1"), PacketID: 42, Payload: []byte("{}"),
		Props: mkProps(PropPayloadFormat, 1, PropMessageExpiry, 300, PropContentType, "application/json",
			PropResponseTopic, "reply", PropCorrelationData, "\x01\x02\x03", PropTopicAlias, 7,
			PropSubscriptionID, 5, PropSubscriptionID, 128,
			PropUserProperty, [2]string{"k1", "v1"}, PropUserProperty, [2]string{"k1", "v2"})}},
	{name: "PUBLISH/v5/topic-alias-only", versions: v5only, wire: h(`
		30 07                    // PUBLISH qos 0, remaining length 7
		00 00                    // topic name "" (the alias stands for it)
		03                       // property length 3
		  23 00 07               //   topic alias 7
		78                       // payload "x"
	`), want: &Publish{Topic: []byte{}, Payload: []byte("x"), Props: mkProps(PropTopicAlias, 7)}},
	{name: "PUBLISH/v5/20000-byte-payload", versions: v5only, wire: cat(h(`
		34 aa 9c 01              // PUBLISH qos 2, remaining length 20010 (three bytes)
		00 05 62 69 67 2f 74     // topic name "big/t"
		01 00                    // packet identifier 256
		00                       // property length 0
	`), payload20000), want: &Publish{QoS: 2, Topic: []byte("big/t"), PacketID: 256, Payload: payload20000}},
	{name: "PUBLISH/v5/properties-out-of-order", versions: v5only, decodeOnly: true, wire: h(`
		30 0f                    // PUBLISH qos 0, remaining length 15
		00 01 74                 // topic name "t"
		0b                       // property length 11
		  26 00 01 6b 00 01 76   //   user property k=v (first: the encoder writes it last)
		  01 00                  //   payload format indicator 0
		  0b 01                  //   subscription identifier 1 (after the payload format: same)
		                         // empty payload
	`), want: &Publish{Topic: []byte("t"), Payload: []byte{}, Props: mkProps(PropUserProperty, [2]string{"k", "v"}, PropPayloadFormat, 0, PropSubscriptionID, 1)}},

	// ---------------------------------------------------------------- PUBACK PUBREC PUBREL PUBCOMP
	{name: "PUBACK/v3", versions: v3only, wire: h(`40 02 00 01  // PUBACK, packet identifier 1`), want: &Ack{Type: PUBACK, PacketID: 1}},
	{name: "PUBREC/v3", versions: v3only, wire: h(`50 02 00 02  // PUBREC, packet identifier 2`), want: &Ack{Type: PUBREC, PacketID: 2}},
	{name: "PUBREL/v3", versions: v3only, wire: h(`62 02 00 03  // PUBREL (flags 0b0010), packet identifier 3`), want: &Ack{Type: PUBREL, PacketID: 3}},
	{name: "PUBCOMP/v3", versions: v3only, wire: h(`70 02 01 00  // PUBCOMP, packet identifier 256`), want: &Ack{Type: PUBCOMP, PacketID: 256}},
	{name: "PUBACK/v5/short-success", versions: v5only, wire: h(`40 02 00 01  // PUBACK, id 1, no reason code: success`), want: &Ack{Type: PUBACK, PacketID: 1}},
	{name: "PUBACK/v5/reason-only", versions: v5only, wire: h(`
		40 03     // PUBACK, remaining length 3
		00 01     // packet identifier 1
		10        // reason 0x10 no matching subscribers, no property length
	`), want: &Ack{Type: PUBACK, PacketID: 1, Reason: NoMatchingSubscribers}},
	{name: "PUBACK/v5/reason-and-properties", versions: v5only, wire: h(`
		40 14                    // PUBACK, remaining length 20
		00 05                    // packet identifier 5
		87                       // reason 0x87 not authorized
		10                       // property length 16
		  1f 00 06 64 65 6e 69 65 64  // reason string "denied"
		  26 00 01 6b 00 01 76   //   user property k=v
	`), want: &Ack{Type: PUBACK, PacketID: 5, Reason: NotAuthorized, Props: mkProps(PropReasonString, "denied", PropUserProperty, [2]string{"k", "v"})}},
	{name: "PUBACK/v5/success-with-empty-properties", versions: v5only, decodeOnly: true, wire: h(`
		40 04 00 01 00 00  // PUBACK id 1, reason 0, property length 0: the encoder writes the 2-byte form
	`), want: &Ack{Type: PUBACK, PacketID: 1}},
	{name: "PUBREC/v5/reason-only", versions: v5only, wire: h(`50 03 00 02 80  // PUBREC id 2, 0x80 unspecified error`), want: &Ack{Type: PUBREC, PacketID: 2, Reason: UnspecifiedError}},
	{name: "PUBREL/v5/not-found", versions: v5only, wire: h(`62 03 00 03 92  // PUBREL id 3, 0x92 packet identifier not found`), want: &Ack{Type: PUBREL, PacketID: 3, Reason: PacketIdentifierNotFound}},
	{name: "PUBCOMP/v5/short-success", versions: v5only, wire: h(`70 02 00 04  // PUBCOMP id 4`), want: &Ack{Type: PUBCOMP, PacketID: 4}},

	// ---------------------------------------------------------------- SUBSCRIBE SUBACK
	{name: "SUBSCRIBE/v3", versions: v3only, wire: h(`
		82 0e                    // SUBSCRIBE (flags 0b0010), remaining length 14
		00 0a                    // packet identifier 10
		00 03 61 2f 62  01       // "a/b", qos 1
		00 03 63 2f 23  02       // "c/#", qos 2
	`), want: &Subscribe{PacketID: 10, Subs: []Subscription{{Filter: []byte("a/b"), QoS: 1}, {Filter: []byte("c/#"), QoS: 2}}}},
	{name: "SUBSCRIBE/v5/options-shared", versions: v5only, wire: h(`
		82 23                    // SUBSCRIBE, remaining length 35
		00 0b                    // packet identifier 11
		09                       // property length 9
		  0b 0c                  //   subscription identifier 12
		  26 00 01 6b 00 01 76   //   user property k=v
		00 03 61 2f 2b           // "a/+"
		2d                       // options: retain handling 2, retain as published, no local, qos 1
		00 0e 24 73 68 61 72 65 2f 67 2f 73 2f 2b 2f 78  // "$share/g/s/+/x"
		11                       // options: retain handling 1, qos 1
	`), want: &Subscribe{PacketID: 11, Props: mkProps(PropSubscriptionID, 12, PropUserProperty, [2]string{"k", "v"}),
		Subs: []Subscription{{Filter: []byte("a/+"), QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
			{Filter: []byte("$share/g/s/+/x"), QoS: 1, RetainHandling: 1}}}},
	{name: "SUBACK/v3", versions: v3only, wire: h(`
		90 05                    // SUBACK, remaining length 5
		00 0a                    // packet identifier 10
		01 02 80                 // granted qos 1, granted qos 2, failure
	`), want: &Suback{PacketID: 10, Reasons: []ReasonCode{GrantedQoS1, GrantedQoS2, UnspecifiedError}}},
	{name: "SUBACK/v5", versions: v5only, wire: h(`
		90 0d                    // SUBACK, remaining length 13
		00 0b                    // packet identifier 11
		05                       // property length 5
		  1f 00 02 6e 6f         //   reason string "no"
		01 00 8f 9e a2           // qos 1, qos 0, topic filter invalid, shared not supported, wildcards not supported
	`), want: &Suback{PacketID: 11, Props: mkProps(PropReasonString, "no"),
		Reasons: []ReasonCode{GrantedQoS1, GrantedQoS0, TopicFilterInvalid, SharedSubscriptionsNotSupported, WildcardSubscriptionsNotSupported}}},

	// ---------------------------------------------------------------- UNSUBSCRIBE UNSUBACK
	{name: "UNSUBSCRIBE/v3", versions: v3only, wire: h(`
		a2 0c                    // UNSUBSCRIBE (flags 0b0010), remaining length 12
		00 0c                    // packet identifier 12
		00 03 61 2f 62           // "a/b"
		00 03 63 2f 23           // "c/#"
	`), want: &Unsubscribe{PacketID: 12, Filters: [][]byte{[]byte("a/b"), []byte("c/#")}}},
	{name: "UNSUBSCRIBE/v5", versions: v5only, wire: h(`
		a2 0f                    // UNSUBSCRIBE, remaining length 15
		00 0d                    // packet identifier 13
		07                       // property length 7
		  26 00 01 6b 00 01 76   //   user property k=v
		00 03 61 2f 62           // "a/b"
	`), want: &Unsubscribe{PacketID: 13, Props: mkProps(PropUserProperty, [2]string{"k", "v"}), Filters: [][]byte{[]byte("a/b")}}},
	{name: "UNSUBACK/v3", versions: v3only, wire: h(`b0 02 00 0c  // UNSUBACK, packet identifier 12`), want: &Unsuback{PacketID: 12}},
	{name: "UNSUBACK/v5", versions: v5only, wire: h(`
		b0 05                    // UNSUBACK, remaining length 5
		00 0d                    // packet identifier 13
		00                       // property length 0
		00 11                    // success, no subscription existed
	`), want: &Unsuback{PacketID: 13, Reasons: []ReasonCode{Success, NoSubscriptionExisted}}},

	// ---------------------------------------------------------------- PINGREQ PINGRESP
	{name: "PINGREQ", versions: allVers, wire: h(`c0 00  // PINGREQ`), want: &ping{PINGREQ}},
	{name: "PINGRESP", versions: allVers, wire: h(`d0 00  // PINGRESP`), want: &ping{PINGRESP}},

	// ---------------------------------------------------------------- DISCONNECT
	{name: "DISCONNECT/v3", versions: v3only, wire: h(`e0 00  // DISCONNECT`), want: &Disconnect{}},
	{name: "DISCONNECT/v5/normal", versions: v5only, wire: h(`e0 00  // DISCONNECT, normal disconnection`), want: &Disconnect{}},
	{name: "DISCONNECT/v5/with-will", versions: v5only, wire: h(`e0 01 04  // DISCONNECT, 0x04 disconnect with will message`), want: &Disconnect{Reason: DisconnectWithWill}},
	{name: "DISCONNECT/v5/session-expiry", versions: v5only, wire: h(`
		e0 07                    // DISCONNECT, remaining length 7
		00                       // normal disconnection
		05                       // property length 5
		  11 00 00 00 00         //   session expiry interval 0
	`), want: &Disconnect{Props: mkProps(PropSessionExpiry, 0)}},
	{name: "DISCONNECT/v5/use-another-server", versions: v5only, wire: h(`
		e0 14                    // DISCONNECT, remaining length 20
		9c                       // 0x9C use another server
		12                       // property length 18
		  1c 00 06 62 3a 31 38 38 33  // server reference "b:1883"
		  1f 00 06 64 72 61 69 6e 73  // reason string "drains"
	`), want: &Disconnect{Reason: UseAnotherServer, Props: mkProps(PropServerReference, "b:1883", PropReasonString, "drains")}},

	// ---------------------------------------------------------------- AUTH
	{name: "AUTH/v5/success-short", versions: v5only, wire: h(`f0 00  // AUTH, success, no properties`), want: &Auth{}},
	{name: "AUTH/v5/continue", versions: v5only, wire: h(`
		f0 10                    // AUTH, remaining length 16
		18                       // 0x18 continue authentication
		0e                       // property length 14
		  15 00 05 54 4f 4b 45 4e  // authentication method "TOKEN"
		  16 00 03 01 02 03      //   authentication data 01 02 03
	`), want: &Auth{Reason: ContinueAuthentication, Props: mkProps(PropAuthMethod, "TOKEN", PropAuthData, "\x01\x02\x03")}},
}

// TestFixtures decodes every fixture and compares with want, encodes want
// and compares with the wire bytes, for each version the fixture is valid
// for.
func TestFixtures(t *testing.T) {
	for _, f := range fixtures {
		for _, v := range f.versions {
			t.Run(f.name+"/level"+itoa(int(v)), func(t *testing.T) {
				got, err := decodeWire(t, f.wire, v)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if !samePacket(got, f.want) || show(got) != show(f.want) {
					t.Fatalf("decode:\n got %s\nwant %s", show(got), show(f.want))
				}
				enc := encodePacket(nil, f.want, v)
				if !f.decodeOnly && !bytes.Equal(enc, f.wire) {
					t.Fatalf("encode:\n got % x\nwant % x", enc, f.wire)
				}
				// Whatever the fixture, encode -> decode gives the struct back.
				again, err := decodeWire(t, enc, v)
				if err != nil || !samePacket(again, f.want) {
					t.Fatalf("re-decode: %v\n got %s\nwant %s", err, show(again), show(f.want))
				}
				if p, ok := f.want.(*Publish); ok && PublishSize(p, v) != len(enc) {
					t.Fatalf("PublishSize %d, encoded %d bytes", PublishSize(p, v), len(enc))
				}
			})
		}
	}
}

// TestFixturesSplit feeds every fixture split at every byte: Frame returns
// ErrIncomplete for every proper prefix, and the whole decodes. A stream of
// all fixtures of a version, cut at arbitrary points, decodes packet by
// packet.
func TestFixturesSplit(t *testing.T) {
	for _, f := range fixtures {
		for i := 0; i < len(f.wire); i++ {
			if _, _, _, err := Frame(f.wire[:i], 0); err != ErrIncomplete {
				t.Fatalf("%s: Frame of the first %d of %d bytes: %v, want ErrIncomplete", f.name, i, len(f.wire), err)
			}
		}
	}
	for _, v := range allVers {
		var stream []byte
		var want []string
		for _, f := range fixtures {
			if bytes.IndexByte(f.versions, v) >= 0 {
				stream = append(stream, f.wire...)
				want = append(want, show(f.want))
			}
		}
		// Deliver the stream in chunks of 1, 2, 3, 7 and 1000 bytes.
		for _, chunk := range []int{1, 2, 3, 7, 1000} {
			var buf []byte
			var got []string
			for off := 0; off < len(stream); off += chunk {
				buf = append(buf, stream[off:min(off+chunk, len(stream))]...)
				for {
					p, n, err := decodePacket(buf, v)
					if errors.Is(err, ErrIncomplete) {
						break
					}
					if err != nil {
						t.Fatalf("level %d chunk %d: %v", v, chunk, err)
					}
					got = append(got, show(p))
					buf = buf[n:]
				}
			}
			if len(buf) != 0 || len(got) != len(want) {
				t.Fatalf("level %d chunk %d: %d packets, %d bytes left; want %d packets", v, chunk, len(got), len(buf), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("level %d chunk %d packet %d:\n got %s\nwant %s", v, chunk, i, got[i], want[i])
				}
			}
		}
	}
}

// TestFixturesTruncatedBody decodes every fixture body cut short (with a
// header that claims the shorter length): never a panic, always an *Error
// (or success, when the shorter body happens to be a valid packet).
func TestFixturesTruncatedBody(t *testing.T) {
	for _, f := range fixtures {
		for _, v := range f.versions {
			fh, body, _, err := Frame(f.wire, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < len(body); i++ {
				fh2 := fh
				fh2.Remaining = i
				if _, err := decodeBody(fh2, body[:i], v); err != nil {
					asError(t, err)
				}
			}
		}
	}
}
