package devserver

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"
)

// reqDoc is a JSON:API request document.
type reqDoc struct {
	Data *reqData                   `json:"data"`
	Meta map[string]json.RawMessage `json:"meta"`
}

type reqData struct {
	ID            string                     `json:"id"`
	Type          string                     `json:"type"`
	Attributes    map[string]json.RawMessage `json:"attributes"`
	Relationships map[string]struct {
		Data json.RawMessage `json:"data"`
	} `json:"relationships"`
}

// decodeBody parses a JSON:API request body. An empty body is an empty
// document. It never panics on garbage: every failure is a 400.
func decodeBody(body []byte) (*reqDoc, *apiError) {
	doc := &reqDoc{}
	if len(bytes.TrimSpace(body)) == 0 {
		return doc, nil
	}
	if !utf8.Valid(body) || bytes.IndexByte(body, 0) >= 0 {
		return nil, badRequest("The request could not be completed because it contains an invalid byte sequence (check encoding)", "ENCODING_INVALID")
	}
	if kind := jsonKind(body); kind != "object" {
		return nil, badRequest("The request could not be completed because it contains invalid JSON (check formatting/encoding)", "JSON_INVALID")
	}
	var probe struct {
		Data json.RawMessage `json:"data"`
		Meta json.RawMessage `json:"meta"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, badRequest("The request could not be completed because it contains invalid JSON (check formatting/encoding)", "JSON_INVALID")
	}
	if len(probe.Meta) > 0 && jsonKind(probe.Meta) != "null" {
		if k := jsonKind(probe.Meta); k != "object" {
			return nil, typeMismatch("/meta", k, "object")
		}
		if err := json.Unmarshal(probe.Meta, &doc.Meta); err != nil {
			return nil, typeMismatch("/meta", "invalid", "object")
		}
	}
	if len(probe.Data) > 0 && jsonKind(probe.Data) != "null" {
		if k := jsonKind(probe.Data); k != "object" {
			return nil, typeMismatch("/data", k, "object")
		}
		var d reqData
		if err := json.Unmarshal(probe.Data, &d); err != nil {
			return nil, badRequest("type mismatch (invalid resource object)", "").pointer("/data")
		}
		doc.Data = &d
	}
	return doc, nil
}

func typeMismatch(pointer, got, want string) *apiError {
	return badRequest("type mismatch (received "+got+" expected "+want+")", "").pointer(pointer)
}

// jsonKind classifies a JSON value the way Keygen's typed params names types.
func jsonKind(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "missing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	if _, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return "integer"
	}
	if _, err := strconv.ParseFloat(string(raw), 64); err == nil {
		return "float"
	}
	return "invalid"
}

// need returns the primary data of a request of the given type.
func (d *reqDoc) need(typ string) (*reqData, *apiError) {
	if d.Data == nil {
		return nil, badRequest("is missing", "").pointer("/data")
	}
	if d.Data.Type != typ && d.Data.Type != singular(typ) {
		return nil, badRequest("type mismatch (received "+strconv.Quote(d.Data.Type)+" expected "+strconv.Quote(typ)+")", "").pointer("/data/type")
	}
	return d.Data, nil
}

func singular(t string) string {
	switch t {
	case "policies":
		return "policy"
	case "processes":
		return "process"
	}
	if len(t) > 1 && t[len(t)-1] == 's' {
		return t[:len(t)-1]
	}
	return t
}

// attr decodes one attribute. present is false when it is absent; null
// leaves v untouched and reports present with isNull.
func (d *reqData) attr(name, want string, v any) (present bool, err *apiError) {
	raw, ok := d.Attributes[name]
	if !ok {
		return false, nil
	}
	k := jsonKind(raw)
	if k == "null" {
		return true, nil
	}
	if k != want && !(want == "integer" && k == "float" && isWhole(raw)) {
		return true, typeMismatch("/data/attributes/"+name, k, want)
	}
	if e := json.Unmarshal(raw, v); e != nil {
		return true, typeMismatch("/data/attributes/"+name, k, want)
	}
	return true, nil
}

func isWhole(raw []byte) bool {
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
	return err == nil && f == float64(int64(f))
}

func (d *reqData) str(name string) (string, *apiError) {
	var s string
	_, err := d.attr(name, "string", &s)
	return s, err
}

func (d *reqData) intp(name string) (*int, *apiError) {
	var f float64
	present, err := d.attr(name, "integer", &f)
	if err != nil || !present || jsonKind(d.Attributes[name]) == "null" {
		return nil, err
	}
	v := int(f)
	return &v, nil
}

func (d *reqData) int64p(name string) (*int64, *apiError) {
	var f float64
	present, err := d.attr(name, "integer", &f)
	if err != nil || !present || jsonKind(d.Attributes[name]) == "null" {
		return nil, err
	}
	v := int64(f)
	return &v, nil
}

func (d *reqData) metadata() (map[string]any, *apiError) {
	var m map[string]any
	if _, err := d.attr("metadata", "object", &m); err != nil {
		return nil, err
	}
	if b, _ := json.Marshal(m); len(b) > 16<<10 {
		return nil, unprocessable("/data/attributes/metadata", "too large (exceeded 16KB)", "METADATA_TOO_LARGE")
	}
	if len(m) > 64 {
		return nil, unprocessable("/data/attributes/metadata", "too many keys (exceeded limit of 64 keys)", "METADATA_TOO_MANY_KEYS")
	}
	if ptr, deep := tooDeep(m, "/data/attributes/metadata", 0); deep {
		// typed_params depth: { maximum: 2 } on every metadata param:
		// containers may nest two levels below metadata.
		return nil, badRequest("maximum depth of 2 exceeded", "").pointer(ptr)
	}
	return m, nil
}

// tooDeep finds the first container nested deeper than metadataMaxDepth
// below the metadata object (at level 0), in key order, and its pointer.
func tooDeep(v any, ptr string, level int) (string, bool) {
	switch t := v.(type) {
	case map[string]any:
		if level > metadataMaxDepth {
			return ptr, true
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if p, deep := tooDeep(t[k], ptr+"/"+k, level+1); deep {
				return p, true
			}
		}
	case []any:
		if level > metadataMaxDepth {
			return ptr, true
		}
		for i, x := range t {
			if p, deep := tooDeep(x, ptr+"/"+strconv.Itoa(i), level+1); deep {
				return p, true
			}
		}
	}
	return "", false
}

const metadataMaxDepth = 2

// relID reads relationships.<name>.data.id.
func (d *reqData) relID(name string) (string, *apiError) {
	r, ok := d.Relationships[name]
	if !ok || jsonKind(r.Data) == "null" || len(r.Data) == 0 {
		return "", nil
	}
	var ref struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	}
	if jsonKind(r.Data) != "object" || json.Unmarshal(r.Data, &ref) != nil {
		return "", typeMismatch("/data/relationships/"+name+"/data", jsonKind(r.Data), "object")
	}
	return ref.ID, nil
}

// metaValue reads meta.<name> into v, reporting presence (null counts as
// present with v untouched).
func (d *reqDoc) metaValue(name, want string, v any) (present, isNull bool, err *apiError) {
	raw, ok := d.Meta[name]
	if !ok {
		return false, false, nil
	}
	k := jsonKind(raw)
	if k == "null" {
		return true, true, nil
	}
	if k != want && !(want == "integer" && k == "float" && isWhole(raw)) {
		return true, false, typeMismatch("/meta/"+name, k, want)
	}
	if e := json.Unmarshal(raw, v); e != nil {
		return true, false, typeMismatch("/meta/"+name, k, want)
	}
	return true, false, nil
}
