package server

import "github.com/ferrymq/ferry/mqttcodec"

// refuse is the one way server code builds the error for a packet it will not take, whether the packet breaks
// the protocol ([MQTT-3.1.0-1], a second CONNECT…) or a policy of this server (QoS above its maximum, Receive
// Maximum, publish rate, alias budget…). reason is the v5 reason code the client is told (DISCONNECT, or the
// ack where the packet can be refused alone); protocolError picks the matching v3 outcome, never a v5 byte.
// packet is the refused packet's type, 0 when none applies; msg says why, lower-case. The decoder's own
// errors come from mqttcodec and are not built here. Set Err on the result to wrap a cause.
func refuse(packet byte, reason mqttcodec.ReasonCode, msg string) *mqttcodec.Error {
	return &mqttcodec.Error{Reason: reason, Packet: packet, Msg: msg}
}
