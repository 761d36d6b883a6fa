package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Schema is a topic's compiled JSON Schema. It is compiled once, at load, and safe for concurrent use.
type Schema struct {
	// JSON is the schema document as JSON (what GET /v1/topics shows).
	JSON     json.RawMessage
	compiled *jsonschema.Schema
}

// SchemaError says where and why an event's data fails its topic's schema.
type SchemaError struct {
	// Pointer is the JSON pointer (RFC 6901) into data of the failing value ("" for data itself).
	Pointer string
	Msg     string
}

func (e *SchemaError) Error() string {
	at := e.Pointer
	if at == "" {
		at = "/"
	}
	return fmt.Sprintf("data at %s: %s", at, e.Msg)
}

// CompileSchema compiles a JSON Schema given as JSON. Schemas without $schema are read as draft 2020-12; no
// schema may load another over the network or from disk ($ref stays inside the document).
func CompileSchema(doc []byte) (*Schema, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	const loc = "sluice:///topic-schema.json"
	if err := c.AddResource(loc, v); err != nil {
		return nil, err
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, errors.New(strings.ReplaceAll(err.Error(), loc, "schema"))
	}
	return &Schema{JSON: doc, compiled: sch}, nil
}

// noLoader refuses every external $ref: loading a schema at runtime is I/O the operator did not ask for.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("cannot load %s: a topic schema must be self-contained ($ref within the document only)", url)
}

var printer = message.NewPrinter(language.English)

// Validate checks data (JSON) against the schema. It returns nil or a *SchemaError naming the first failing
// value by its JSON pointer.
func (s *Schema) Validate(data []byte) error {
	if len(data) == 0 {
		data = []byte("null")
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return &SchemaError{Msg: "not JSON: " + err.Error()}
	}
	err = s.compiled.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &SchemaError{Msg: err.Error()}
	}
	// The first leaf is the most specific failure: a wrong type deep inside, not "properties failed".
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	loc := append([]string(nil), ve.InstanceLocation...)
	if r, ok := ve.ErrorKind.(*kind.Required); ok && len(r.Missing) > 0 {
		loc = append(loc, r.Missing[0])
	}
	return &SchemaError{Pointer: pointer(loc), Msg: ve.ErrorKind.LocalizedString(printer)}
}

// pointer escapes reference tokens into an RFC 6901 JSON pointer.
func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(t))
	}
	return b.String()
}
