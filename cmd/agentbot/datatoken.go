package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentbot/agentbot/web"
)

// Tokens serve makes for itself live in its data dir, one per file, 0600:
// whoever may read the data dir may read the store and every task log
// anyway, so a token kept there grants nothing more than they have.

// pagesTokenFile holds the task pages' (and /metrics') token when the
// operator configured none.
const pagesTokenFile = "pages-token"

// pagesUser is the basic-auth user name that goes with the generated
// pages token, for browsers, which send basic auth but not bearer tokens.
const pagesUser = "agentbot"

// dataDirToken reads the token in dataDir/name; with create it makes one
// (256 random bits, hex) when the file does not exist. made says it did.
// A file others may read is refused: its token is no longer a secret.
func dataDirToken(dataDir, name string, create bool) (tok string, made bool, err error) {
	path := filepath.Join(dataDir, name)
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.Mode().Perm()&0o077 != 0:
		return "", false, fmt.Errorf("token file %s is mode %04o: others may read it; remove it (serve makes a new one) or chmod 600 it", path, fi.Mode().Perm())
	case err == nil:
		b, err := os.ReadFile(path)
		if err != nil {
			return "", false, fmt.Errorf("token file: %w", err)
		}
		if tok = strings.TrimSpace(string(b)); len(tok) < 32 {
			return "", false, fmt.Errorf("token file %s holds fewer than 32 characters; remove it and serve makes a new one", path)
		}
		return tok, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("token file: %w", err)
	case !create:
		return "", false, fmt.Errorf("token file %s: %w", path, err)
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	tok = hex.EncodeToString(raw)
	// O_EXCL: two servers racing on one data dir never both believe in
	// their own token (the store's lock stops the second soon after).
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", false, fmt.Errorf("write token file: %w", err)
	}
	_, werr := f.WriteString(tok + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return "", false, fmt.Errorf("write token file %s: %w", path, err)
	}
	return tok, true, nil
}

// pagesAuth is what the task pages and /metrics require: the operator's
// token or basic auth, or else a token serve keeps in the data dir (made
// on first start, reused after). The log names the file, never the token.
func pagesAuth(dataDir string, configured web.Auth, log *slog.Logger) (web.Auth, error) {
	if configured.Configured() {
		return configured, nil
	}
	tok, made, err := dataDirToken(dataDir, pagesTokenFile, true)
	if err != nil {
		return web.Auth{}, fmt.Errorf("task pages: %w", err)
	}
	path := filepath.Join(dataDir, pagesTokenFile)
	msg := "task pages: no AGENTBOT_PAGES_TOKEN_FILE or AGENTBOT_PAGES_BASIC_AUTH_FILE; using the token in the data dir"
	if made {
		msg = "task pages: no AGENTBOT_PAGES_TOKEN_FILE or AGENTBOT_PAGES_BASIC_AUTH_FILE; generated a token in the data dir"
	}
	log.Info(msg, slog.String("token_file", path), slog.String("basic_user", pagesUser))
	return web.Auth{BearerToken: tok, BasicUser: pagesUser, BasicPassword: tok}, nil
}
