package installer

import (
	"fmt"
	"strings"
)

// This file renders service-file templates written in the syntax of
// kardianos/service v1.3's own template engine, which replaced text/template
// and is not exported. The plan shows the exact file kardianos will write, so
// the subset our templates use is rendered here the same way: {{Key}},
// {{Key | fn | fn}}, {{if Key}}…{{else}}…{{end}}, {{range Key}}…{{.}}…{{end}}.
// Values are strings or []string, as in kardianos. Whitespace-trim markers
// ({{- -}}) are not used by our templates and are rejected.
// TestSystemdMatchesKardianos checks the result byte for byte against the
// file kardianos itself writes.

type tnode struct {
	kind  byte // 't' text, 'v' value, 'i' if, 'r' range
	text  string
	funcs []string
	body  []tnode
	alt   []tnode
}

// parseTmpl parses a template into nodes.
func parseTmpl(src string) ([]tnode, error) {
	nodes, term, rest, err := parseTmplNodes(src)
	if err != nil {
		return nil, err
	}
	if term != "" || rest != "" {
		return nil, fmt.Errorf("template: unexpected {{%s}}", term)
	}
	return nodes, nil
}

func parseTmplNodes(src string) (nodes []tnode, term, rest string, err error) {
	for {
		open := strings.Index(src, "{{")
		if open < 0 {
			if src != "" {
				nodes = append(nodes, tnode{kind: 't', text: src})
			}
			return nodes, "", "", nil
		}
		end := strings.Index(src[open:], "}}")
		if end < 0 {
			return nil, "", "", fmt.Errorf("template: unclosed {{")
		}
		if open > 0 {
			nodes = append(nodes, tnode{kind: 't', text: src[:open]})
		}
		action := src[open+2 : open+end]
		src = src[open+end+2:]
		if strings.HasPrefix(action, "-") || strings.HasSuffix(action, "-") {
			return nil, "", "", fmt.Errorf("template: trim markers are not supported in {{%s}}", action)
		}
		action = strings.TrimSpace(action)
		kw, arg, _ := strings.Cut(action, " ")
		switch kw {
		case "end", "else":
			return nodes, kw, src, nil
		case "if", "range":
			arg = strings.TrimSpace(arg)
			if arg == "" {
				return nil, "", "", fmt.Errorf("template: %s needs a key", kw)
			}
			n := tnode{kind: 'i', text: arg}
			if kw == "range" {
				n.kind = 'r'
			}
			var t string
			if n.body, t, src, err = parseTmplNodes(src); err != nil {
				return nil, "", "", err
			}
			if t == "else" && kw == "if" {
				if n.alt, t, src, err = parseTmplNodes(src); err != nil {
					return nil, "", "", err
				}
			}
			if t != "end" {
				return nil, "", "", fmt.Errorf("template: {{%s %s}} not closed by {{end}}", kw, arg)
			}
			nodes = append(nodes, n)
		default:
			parts := strings.Split(action, "|")
			n := tnode{kind: 'v', text: strings.TrimSpace(parts[0])}
			for _, p := range parts[1:] {
				n.funcs = append(n.funcs, strings.TrimSpace(p))
			}
			nodes = append(nodes, n)
		}
	}
}

// renderTmpl renders src with data (string or []string values) and funcs.
func renderTmpl(src string, data map[string]any, funcs map[string]func(string) string) (string, error) {
	nodes, err := parseTmpl(src)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := execTmpl(&b, nodes, data, nil, funcs); err != nil {
		return "", err
	}
	return b.String(), nil
}

func execTmpl(b *strings.Builder, nodes []tnode, data map[string]any, dot any, funcs map[string]func(string) string) error {
	look := func(key string) (any, error) {
		if key == "." {
			return dot, nil
		}
		v, ok := data[key]
		if !ok {
			return nil, fmt.Errorf("template: unknown key %q", key)
		}
		return v, nil
	}
	for _, n := range nodes {
		switch n.kind {
		case 't':
			b.WriteString(n.text)
		case 'v':
			v, err := look(n.text)
			if err != nil {
				return err
			}
			s, ok := v.(string)
			if !ok {
				return fmt.Errorf("template: key %q is not a string", n.text)
			}
			for _, f := range n.funcs {
				fn, ok := funcs[f]
				if !ok {
					return fmt.Errorf("template: unknown function %q", f)
				}
				s = fn(s)
			}
			b.WriteString(s)
		case 'i':
			v, err := look(n.text)
			if err != nil {
				return err
			}
			body := n.alt
			switch t := v.(type) {
			case string:
				if t != "" {
					body = n.body
				}
			case []string:
				if len(t) > 0 {
					body = n.body
				}
			}
			if err := execTmpl(b, body, data, dot, funcs); err != nil {
				return err
			}
		case 'r':
			v, err := look(n.text)
			if err != nil {
				return err
			}
			items, ok := v.([]string)
			if !ok && v != nil {
				return fmt.Errorf("template: key %q is not a list", n.text)
			}
			for _, it := range items {
				if err := execTmpl(b, n.body, data, it, funcs); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// The pipeline functions kardianos offers to each template.
var (
	systemdFuncs = map[string]func(string) string{
		"cmd":       func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` },
		"cmdEscape": func(s string) string { return strings.ReplaceAll(s, " ", `\x20`) },
	}
	launchdFuncs = map[string]func(string) string{
		"html": xmlEscape,
	}
)

var xmlEscaper = strings.NewReplacer(`&`, "&amp;", `'`, "&#39;", `<`, "&lt;", `>`, "&gt;", `"`, "&#34;")

func xmlEscape(s string) string { return xmlEscaper.Replace(s) }
