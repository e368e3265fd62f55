// Package kname names what agentbot creates in Kubernetes: claim names and
// label values derived from task ids and repositories. It has no Kubernetes
// dependencies, so its fuzz target builds in seconds.
package kname

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

const (
	claimNamePrefix     = "agentbot-"
	claimNameSlugMax    = 40
	claimNameHashLength = 10
)

// ClaimName is the SandboxClaim name of a task: deterministic, so a restarted
// bot finds the claim again, and safe as a DNS-1035 label, because on a cold
// start the Sandbox, Pod and Service take the claim's name. The hash keeps
// two task ids that slug to the same text apart.
func ClaimName(taskID string) string {
	sum := sha256.Sum256([]byte(taskID))
	slug := slugify(taskID, claimNameSlugMax)
	name := claimNamePrefix
	if slug != "" {
		name += slug + "-"
	}
	return name + hex.EncodeToString(sum[:])[:claimNameHashLength]
}

// slugify lowers s, replaces every run of characters outside [a-z0-9] by one
// hyphen, trims hyphens and cuts the result to max characters.
func slugify(s string, max int) string {
	var b strings.Builder
	hyphen := false
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			hyphen = false
		default:
			if !hyphen && b.Len() > 0 {
				b.WriteByte('-')
				hyphen = true
			}
		}
		if b.Len() >= max {
			break
		}
	}
	return strings.Trim(b.String(), "-")
}

// LabelValue turns s into a valid label value: characters outside
// [A-Za-z0-9._-] become '_', at most 63 characters, alphanumeric at both
// ends. A repository "owner/name" becomes "owner_name".
func LabelValue(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
		if !ok {
			b[i] = '_'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return strings.TrimFunc(string(b), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	})
}
