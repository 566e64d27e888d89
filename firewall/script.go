package firewall

import (
	"fmt"
	"slices"
	"strings"
)

// The scripts below are what Apply, Rebuild and Delete do, as `nft -f` input: one
// script is one batch, as each of them is. They are printed by --dry-run and
// --explain from the same State and Change the functions program, rendered as Render
// renders them, whose kernel test holds the rendering to the programming.

// ApplyScript is Apply's batch: the change's removals, then its additions.
func ApplyScript(ch Change) string {
	var b strings.Builder
	del, add := ch.Remove.Sorted(), ch.Add.Sorted()
	elementLines(&b, "delete", "inet", inetSets, inetElements(del))
	elementLines(&b, "delete", "bridge", bridgeSets, bridgeElements(del))
	elementLines(&b, "add", "inet", inetSets, inetElements(add))
	elementLines(&b, "add", "bridge", bridgeSets, bridgeElements(add))
	return b.String()
}

func elementLines(b *strings.Builder, verb, family string, sets []setSpec, els map[string][]string) {
	for _, s := range sets {
		if e := els[s.name]; len(e) > 0 {
			fmt.Fprintf(b, "%s element %s %s %s { %s }\n", verb, family, TableName, s.name, strings.Join(e, ", "))
		}
	}
}

// RebuildScript is Rebuild's batch: both tables replaced by ones holding exactly
// the state. The rules nft lists but cannot read back (a raw neighbour discovery
// field looked up in a typed set) are comments in it: ctnet programs them over
// netlink, and a replayed script lacks them.
func RebuildScript(s State) string {
	var b strings.Builder
	b.WriteString(deleteTables)
	script := Render(s)
	for _, r := range slices.Concat(inetRules(), bridgeRules()) {
		if !r.listedOnly {
			continue
		}
		line := r.text
		if r.comment != "" {
			line += fmt.Sprintf(" comment %q", r.comment)
		}
		script = strings.Replace(script, "\t\t"+line+"\n", "\t\t# "+UnreadableRule+": "+line+"\n", 1)
	}
	b.WriteString(script)
	return b.String()
}

// UnreadableRule begins the comment RebuildScript puts in place of a rule nft
// cannot read.
const UnreadableRule = "programmed over netlink, nft cannot read it"

// DeleteScript is Delete's batch.
func DeleteScript() string { return deleteTables }

// deleteTables deletes both tables whether or not they exist: a table added first
// makes the deletion valid either way.
const deleteTables = "add table inet " + TableName + "\ndelete table inet " + TableName + "\n" +
	"add table bridge " + TableName + "\ndelete table bridge " + TableName + "\n"
