package network

import (
	"github.com/ctnet/ctnet/internal/bandwidth"
	"github.com/ctnet/ctnet/link"
	"github.com/ctnet/ctnet/store"
)

// ParseRate reads a rate in bits per second as the CLI takes it (--ingress-rate,
// --egress-rate): a number with an optional k, M or G, as Kubernetes' bandwidth
// annotations (10M), or kbit, mbit, gbit, as tc (10mbit); from 1k to 100G.
func ParseRate(s string) (uint64, error) { return bandwidth.ParseRate(s) }

// FormatRate writes a rate in bits per second as tc does: 20mbit.
func FormatRate(bits uint64) string { return bandwidth.FormatRate(bits) }

// checkBandwidth says what is wrong with limits, naming the field as
// Bandwidth.IngressRate and so on.
func checkBandwidth(b Bandwidth) error {
	if field, err := b.Check(); err != nil {
		return &FieldError{Field: "Bandwidth." + field, Err: err}
	}
	return nil
}

// limitAttachment records limits on an attachment, with the name of the ifb device
// that shapes its egress: the host veth's, "ib" for "vc".
func limitAttachment(att *store.Attachment, b Bandwidth) {
	if b.IsZero() {
		return
	}
	att.Bandwidth = &b
	if b.EgressRate > 0 {
		att.IFB = "ib" + att.HostVeth[len("vc"):]
	}
}

// shapeAttachment sets up an attachment's limits on its host veth, whose undo takes
// the veth's qdiscs with it, and on its ifb device.
func (m *Manager) shapeAttachment(o *op, c *store.Container, n *store.Network, att *store.Attachment) error {
	if att.Bandwidth == nil {
		return nil
	}
	err := link.Shape(m.host, link.Shaping{HostVeth: att.HostVeth, IFB: att.IFB, Alias: link.ContainerAlias(c.ID), MTU: n.MTU, Limits: *att.Bandwidth})
	if err != nil {
		return err
	}
	if att.IFB == "" {
		o.step("limit " + att.HostVeth)
		return nil
	}
	o.undo.push("limit "+att.HostVeth+" with ifb "+att.IFB, func() error { return link.Delete(m.host, att.IFB) })
	return nil
}

// removeIFB retires the ifb device of an attachment, if it has one: unlike its veth,
// it does not go with the container's namespace.
func (m *Manager) removeIFB(o *op, att *store.Attachment) error {
	if att.IFB == "" {
		return nil
	}
	return m.retire(o, link.Retiring{Name: att.IFB})
}
