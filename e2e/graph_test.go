package e2e

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctnet/ctnet/internal/lab"
)

// graph draws the networks: the text names the uplink, each network's bridge,
// subnet, gateway and kind, each container's interface, address, veth and published
// port; Graphviz's dot renders the DOT; the SVG is well-formed XML whose text names
// every container and network, and -o writes the same picture to a file.
func TestGraph(t *testing.T) {
	e := newEnv(t)
	if _, err := lookPath("dot"); err != nil {
		lab.Missing(t, "needs dot (Debian's graphviz)")
	}
	e.must("network", "create", "front", "--subnet", "10.96.1.0/24")
	e.must("network", "create", "sealed", "--subnet", "10.96.2.0/24", "--internal")
	e.runDetached("--name", "web", "--network", "front", "-p", "8080:8000", "--", "sleep", "600")
	e.runDetached("--name", "db", "--network", "sealed", "--", "sleep", "600")
	e.must("network", "connect", "sealed", "web")
	e.runDetached("--name", "h", "--network", "host", "--", "sleep", "600")
	web := e.inspect("web")

	text := e.must("graph")
	for _, want := range []string{
		"uplink uplink0 " + lab.HostUplinkIP + "/",
		"network front: bridge ct-",
		"10.96.1.1/24, subnet 10.96.1.0/24; masqueraded behind the uplink",
		"10.96.2.1/24, subnet 10.96.2.0/24; internal: no way out, no way in",
		"  web: eth0 " + web.Networks[0].IP + "/24, veth pair " + web.Networks[0].HostVeth + " (host, up) <-> eth0, published 0.0.0.0:8080->8000/tcp",
		"  web: eth1 ",
		"  db: eth0 10.96.2.",
		"container h: --network host",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("graph's text lacks %q:\n%s", want, text)
		}
	}

	dot := e.must("graph", "--format", "dot")
	render := e.host.Command(t.Context(), "dot", "-Tsvg")
	render.Stdin = strings.NewReader(dot)
	var rendered, stderr bytes.Buffer
	render.Stdout, render.Stderr = &rendered, &stderr
	if err := render.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("dot -Tsvg: %v: %s\n%s", err, stderr.String(), dot)
	}
	if !strings.Contains(rendered.String(), "container web") {
		t.Errorf("Graphviz's picture does not name container web:\n%s", rendered.String())
	}

	svg := e.must("graph", "--format", "svg")
	texts := svgTexts(t, svg)
	for _, want := range []string{"container web", "container db", "container h", "network front", "network sealed", "published 0.0.0.0:8080->8000/tcp"} {
		if !strings.Contains(texts, want) {
			t.Errorf("the SVG's text lacks %q:\n%s", want, texts)
		}
	}
	file := filepath.Join(t.TempDir(), "networks.svg")
	e.must("graph", "--format", "svg", "-o", file)
	if b, err := os.ReadFile(file); err != nil || string(b) != svg {
		t.Errorf("graph -o wrote %q (%v), want what it prints", b, err)
	}
	if r := e.ctnet("graph", "--format", "png"); r.Code != 125 && r.Code != 1 || !strings.Contains(r.Stderr, "--format") {
		t.Errorf("graph --format png: want a usage error naming --format, got %s", r)
	}
	e.must("rm", "-f", "web", "db", "h")
	e.must("network", "rm", "front", "sealed")
}

// svgTexts parses an SVG document, failing the test unless it is well-formed XML
// with an svg root, and returns its text, one element's per line.
func svgTexts(t *testing.T, doc string) string {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(doc))
	var texts []string
	root := ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v\n%s", err, doc)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
		case xml.CharData:
			if s := strings.TrimSpace(string(tok)); s != "" {
				texts = append(texts, s)
			}
		}
	}
	if root != "svg" {
		t.Fatalf("the SVG's root element is %q", root)
	}
	return strings.Join(texts, "\n")
}
