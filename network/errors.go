package network

import (
	"errors"
	"fmt"
	"strconv"
)

// FieldError is a field of a spec that cannot be used as given. Field names it as
// the spec types do ("IP", "Ports", "Hostname", "Aliases", "DNS", "ExtraHosts",
// "NetNS", "IfName", "Network", "UserNet.CIDR", "UserNet.MTU", "Bandwidth.IngressRate"
// and the other limits; "Subnet", "Gateway", "Bridge", "MTU", "Driver", "Parent",
// "IPRange" of a NetworkSpec), Value is what was given (empty when the field
// as a whole is wrong), and Err says why: another FieldError when the value broke
// the rules of another field, as an alias those of a hostname. It matches whatever
// Err matches, and ErrInvalid unless Err is a conflict with what exists (ErrConflict:
// an address another container holds, a subnet that overlaps), which is no bad input.
//
// Front ends name the fields as their users know them (a command line's flags, a
// CNI configuration's keys) with Render.
type FieldError struct {
	Field string
	Value string
	Err   error
}

func (e *FieldError) Error() string { return e.Render(func(field string) string { return field }) }

// Render is the error with every field, nested ones too, named by name.
func (e *FieldError) Render(name func(field string) string) string {
	s := "bad " + name(e.Field)
	if e.Value != "" {
		s += " " + strconv.Quote(printable(e.Value))
	}
	var inner *FieldError
	if errors.As(e.Err, &inner) && inner == e.Err {
		return s + ": " + inner.Render(name)
	}
	return s + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

func (e *FieldError) Is(target error) bool {
	return target == ErrInvalid && !errors.Is(e.Err, ErrConflict)
}

// badField is a FieldError whose reason is the formatted text.
func badField(field, value, format string, args ...any) error {
	return &FieldError{Field: field, Value: value, Err: fmt.Errorf(format, args...)}
}
