package payload

import (
	"context"
	"errors"
	"fmt"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Protobuf: the .proto text (a file, or the registry's schema) is compiled at run time by protocompile, with
// the well-known google/protobuf imports available; other imports (registry schema references) are not
// supported. The device's JSON is read with protojson (unknown fields and wrong types are errors) into a
// dynamic message of the rule's type and marshaled; records carry the Confluent message-index array naming
// the type in the file.

type protoCodec struct {
	file  protoreflect.FileDescriptor
	md    protoreflect.MessageDescriptor // the rule's message (ingest)
	index []int                          // md's message indexes in the file
}

const protoName = "schema.proto"

func newProto(text, message string, refs []ref) (*protoCodec, error) {
	files := map[string]string{protoName: text}
	for _, r := range refs {
		files[r.name] = r.text // imported by this path
	}
	comp := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
		Accessor: protocompile.SourceAccessorFromMap(files),
	})}
	compiled, err := comp.Compile(context.Background(), protoName)
	if err != nil {
		return nil, fmt.Errorf("cannot compile Protobuf schema: %w", err)
	}
	fd := compiled[0]
	var md protoreflect.MessageDescriptor
	if message == "" {
		if fd.Messages().Len() == 0 {
			return nil, errors.New("the Protobuf schema defines no message")
		}
		md = fd.Messages().Get(0)
	} else {
		d, ok := fd.FindDescriptorByName(protoreflect.FullName(message)).(protoreflect.MessageDescriptor)
		if !ok {
			return nil, fmt.Errorf("the Protobuf schema has no message %s", message)
		}
		md = d
	}
	return &protoCodec{file: fd, md: md, index: messageIndex(md)}, nil
}

// messageIndex is the Confluent message-index path of md: its index among the file's top-level messages,
// then among each nested level's.
func messageIndex(md protoreflect.MessageDescriptor) []int {
	var idx []int
	for d := protoreflect.Descriptor(md); ; {
		idx = append([]int{d.Index()}, idx...)
		p := d.Parent()
		if _, ok := p.(protoreflect.MessageDescriptor); !ok {
			return idx
		}
		d = p
	}
}

func (p *protoCodec) ingest(dst, payload []byte) ([]byte, error) {
	m := dynamicpb.NewMessage(p.md)
	if err := protojson.Unmarshal(payload, m); err != nil {
		return dst, &Invalid{Reason: ReasonSchema, Err: err}
	}
	out, err := proto.MarshalOptions{}.MarshalAppend(dst, m)
	if err != nil {
		return dst, &Invalid{Reason: ReasonSchema, Err: err} // a proto2 required field is missing
	}
	return out, nil
}

func (p *protoCodec) toJSON(body []byte, index []int) ([]byte, error) {
	md := p.md
	if index != nil {
		msgs := p.file.Messages()
		md = nil
		for _, i := range index {
			if i < 0 || i >= msgs.Len() {
				return nil, fmt.Errorf("message index %v not in the schema", index)
			}
			md = msgs.Get(i)
			msgs = md.Messages()
		}
		if md == nil {
			return nil, errors.New("empty message index")
		}
	}
	m := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(body, m); err != nil {
		return nil, err
	}
	return protojson.Marshal(m)
}
