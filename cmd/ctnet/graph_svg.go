package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/ctnet/ctnet/network"
)

// The picture is three columns, drawn by ctnet itself: the uplinks, the networks and
// the containers, each network level with its first member. A Graphviz library was
// weighed and left out: go-graphviz compiles its WebAssembly Graphviz in an init
// function, which every ctnet process (each container's supervisor too) would run.
const (
	svgColUplink    = 20
	svgColNetwork   = 360
	svgColContainer = 740
	svgBoxWidth     = 240
	svgLine         = 15 // one text line's height
	svgPad          = 10
	svgGap          = 20
)

type svgBox struct {
	x, y, h int
	lines   []string
	dashed  bool
	fill    string
}

func newSVGBox(x, y int, fill string, lines ...string) *svgBox {
	return &svgBox{x: x, y: y, h: len(lines)*svgLine + 2*svgPad, lines: lines, fill: fill}
}

func (b *svgBox) mid() int { return b.y + b.h/2 }

// svgText escapes s for the SVG's text and attribute values as encoding/xml's
// EscapeText does, which ctnet does not link for this alone: its package
// initialisation allocated 18 KB in every command.
func svgText(s string) string {
	var w strings.Builder
	for _, r := range s {
		switch r {
		case '"':
			w.WriteString("&#34;")
		case '\'':
			w.WriteString("&#39;")
		case '&':
			w.WriteString("&amp;")
		case '<':
			w.WriteString("&lt;")
		case '>':
			w.WriteString("&gt;")
		case '\t':
			w.WriteString("&#x9;")
		case '\n':
			w.WriteString("&#xA;")
		case '\r':
			w.WriteString("&#xD;")
		default:
			if !isXMLChar(r) {
				r = utf8.RuneError
			}
			w.WriteRune(r)
		}
	}
	return w.String()
}

// isXMLChar says whether XML allows r (its Char production); invalid UTF-8 reads as
// utf8.RuneError, which it allows.
func isXMLChar(r rune) bool {
	return r == '\t' || r == '\n' || r == '\r' || r >= 0x20 && r <= 0xd7ff || r >= 0xe000 && r <= 0xfffd ||
		r >= 0x10000 && r <= 0x10ffff
}

func writeTopologySVG(w io.Writer, t *network.Topology) error {
	var boxes []*svgBox
	type svgEdge struct {
		from, to *svgBox
		label    string
	}
	var edges []svgEdge // drawn last: a container's box grows with each network it is on
	edge := func(from, to *svgBox, label string) { edges = append(edges, svgEdge{from, to, label}) }
	var uplinks []*svgBox
	y := svgGap
	for _, u := range t.Uplinks {
		lines := append([]string{"uplink " + u.Interface}, u.Addresses...)
		if u.Gateway != "" {
			lines = append(lines, "default via "+u.Gateway)
		}
		b := newSVGBox(svgColUplink, y, "#e8f0fe", lines...)
		uplinks = append(uplinks, b)
		boxes = append(boxes, b)
		y += b.h + svgGap
	}
	containers := map[string]*svgBox{}
	next := svgGap // the next free row of each column
	nextNet := svgGap
	for _, n := range t.Networks {
		top := max(next, nextNet)
		var members []*svgBox
		for _, mem := range n.Members {
			c := containers[mem.Container]
			if c == nil {
				c = newSVGBox(svgColContainer, next, "#fef7e0", "container "+mem.Container)
				if next < top {
					c.y = top
				}
				containers[mem.Container] = c
				boxes = append(boxes, c)
			}
			c.lines = append(c.lines, fmt.Sprintf("%s %s/%d", mem.Interface, mem.IP, mem.PrefixLen))
			for _, p := range mem.Ports {
				c.lines = append(c.lines, "published "+portString(p))
			}
			c.h = len(c.lines)*svgLine + 2*svgPad
			next = max(next, c.y+c.h+svgGap)
			members = append(members, c)
		}
		nb := newSVGBox(svgColNetwork, top, "#e6f4ea", "network "+n.Name, fmt.Sprintf("bridge %s (%s)", n.Bridge, n.BridgeState),
			fmt.Sprintf("%s/%d gateway", n.Gateway, n.Subnet.Bits()), networkKind(n))
		nb.dashed = n.Internal
		boxes = append(boxes, nb)
		nextNet = nb.y + nb.h + svgGap
		if !n.Internal {
			how := "masquerade"
			if !n.Masquerade {
				how = "routed"
			}
			for _, u := range uplinks {
				edge(u, nb, how)
			}
		}
		for i, c := range members {
			edge(nb, c, n.Members[i].HostVeth+" ⇄ "+n.Members[i].Interface)
		}
	}
	for _, o := range t.Others {
		b := newSVGBox(svgColContainer, next, "#f1f3f4", "container "+o.Container, "--network "+o.Mode)
		b.dashed = true
		boxes = append(boxes, b)
		next += b.h + svgGap
	}
	height := max(y, next, nextNet) + svgGap
	width := svgColContainer + svgBoxWidth + svgGap
	var s strings.Builder
	fmt.Fprintf(&s, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif">
<rect width="100%%" height="100%%" fill="white"/>
`, width, height, width, height)
	for _, e := range edges {
		x1, y1, x2, y2 := e.from.x+svgBoxWidth, e.from.mid(), e.to.x, e.to.mid()
		fmt.Fprintf(&s, `<path d="M%d %d C%d %d %d %d %d %d" fill="none" stroke="#555"/>`+"\n", x1, y1, (x1+x2)/2, y1, (x1+x2)/2, y2, x2, y2)
		fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="middle" font-size="10" fill="#333" stroke="white" stroke-width="3" paint-order="stroke">%s</text>`+"\n",
			(x1+x2)/2, (y1+y2)/2-4, svgText(e.label))
	}
	for _, b := range boxes {
		dash := ""
		if b.dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		fmt.Fprintf(&s, `<g><rect x="%d" y="%d" width="%d" height="%d" rx="6" fill="%s" stroke="#333"%s/>`, b.x, b.y, svgBoxWidth, b.h, b.fill, dash)
		for i, l := range b.lines {
			weight := ""
			if i == 0 {
				weight = ` font-weight="bold"`
			}
			fmt.Fprintf(&s, `<text x="%d" y="%d" font-size="11"%s>%s</text>`, b.x+svgPad, b.y+svgPad+(i+1)*svgLine-3, weight, svgText(l))
		}
		s.WriteString("</g>\n")
	}
	s.WriteString("</svg>\n")
	_, err := io.WriteString(w, s.String())
	return err
}
