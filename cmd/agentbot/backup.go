package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/agentbot/agentbot/state"
)

// `agentbot backup FILE` copies the store while serve runs. serve holds the
// file's exclusive lock, so the CLI cannot open it; serve instead answers
// GET /admin/backup with a copy from one read transaction, to a bearer
// token it keeps in the data dir (admin-token, 0600): whoever may read the
// data dir may read the store anyway, so the token grants nothing more.
// With serve stopped the CLI opens the file read-only and copies it itself.

const adminTokenFile = "admin-token"

// BackupOptions are `agentbot backup`'s settings.
type BackupOptions struct {
	URL  string
	File string
}

var backupSettings = []setting[BackupOptions]{
	{"url", "AGENTBOT_ADMIN_URL", "", "serve's address for the copy while it runs (default: derived from --listen, on 127.0.0.1)", func(o *BackupOptions) any { return &o.URL }},
}

// adminToken reads the data dir's admin token, making it on first use.
func adminToken(dataDir string, create bool) (string, error) {
	tok, _, err := dataDirToken(dataDir, adminTokenFile, create)
	return tok, err
}

// adminHook serves GET /admin/backup.
func adminHook(_ context.Context, m *Main) (Plugin, error) {
	tok, err := adminToken(m.Config.DataDir, true)
	if err != nil {
		return Plugin{}, err
	}
	h := func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		size, err := m.Store.BackupSize()
		if err != nil {
			http.Error(w, "backup failed", http.StatusInternalServerError)
			return
		}
		// A large file takes longer than the server's write timeout.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Hour))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Agentbot-Backup-Size", strconv.FormatInt(size, 10))
		n, err := m.Store.Backup(r.Context(), w)
		if err != nil {
			m.Logger.ErrorContext(r.Context(), "backup", slog.Int64("bytes", n), slog.Any("err", err))
			return
		}
		m.Logger.InfoContext(r.Context(), "backup taken", slog.Int64("bytes", n))
	}
	return Plugin{Routes: func(r chi.Router) { r.Get("/admin/backup", h) }}, nil
}

// backup writes the copy to FILE.tmp, checks that it opens as a store,
// and renames it into place.
func (m *Main) backup(ctx context.Context) error {
	dst := m.Backup.File
	tmp := dst + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp)
	n, how, err := m.copyStore(ctx, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("backup to %s: %w", dst, err)
	}
	b, err := state.Open(tmp, state.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("backup to %s: the copy does not open: %w", dst, err)
	}
	tasks, err := b.Count(ctx)
	b.Close()
	if err != nil {
		return fmt.Errorf("backup to %s: the copy does not read: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(m.Stdout, "backed up %d tasks (%d bytes, %s) to %s\n", tasks, n, how, dst)
	return nil
}

// copyStore copies from the file when no serve holds it, else from serve.
func (m *Main) copyStore(ctx context.Context, w io.Writer) (int64, string, error) {
	s, err := state.Open(m.DBPath(), state.Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	if err == nil {
		defer s.Close()
		n, err := s.Backup(ctx, w)
		return n, "from the file", err
	}
	if !errors.Is(err, state.ErrLocked) {
		return 0, "", err
	}
	tok, err := adminToken(m.Options.DataDir, false)
	if err != nil {
		return 0, "", fmt.Errorf("serve holds the store: %w", err)
	}
	url := m.Backup.URL
	if url == "" {
		url = "http://" + loopbackAddr(m.Options.Listen)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+"/admin/backup", nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("serve holds the store; asking it at %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("serve at %s answered %s", url, resp.Status)
	}
	n, err := io.Copy(w, resp.Body)
	if err == nil && resp.Header.Get("X-Agentbot-Backup-Size") != strconv.FormatInt(n, 10) {
		err = fmt.Errorf("copy cut short: %d of %s bytes", n, resp.Header.Get("X-Agentbot-Backup-Size"))
	}
	return n, "from the running serve", err
}

// loopbackAddr turns a listen address into one to dial on this host.
func loopbackAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
