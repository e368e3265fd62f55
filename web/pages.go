package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/agentbot/agentbot/runner"
)

//go:embed templates/*.html
var templateFS embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"secs": func(s float64) string {
		return (time.Duration(s * float64(time.Second))).Round(100 * time.Millisecond).String()
	},
	"line": logLine,
	"safeURL": func(s string) template.URL {
		// Only http(s) links; anything else renders inert.
		if strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://") {
			return template.URL(s)
		}
		return ""
	},
}).ParseFS(templateFS, "templates/*.html"))

type listPage struct {
	Tasks []TaskSummary
}

type taskPage struct {
	TaskPage
	Live bool
}

// logLine is how an event reads in the log view.
func logLine(ev runner.Event) string {
	prefix := ""
	if !ev.Time.IsZero() {
		prefix = ev.Time.UTC().Format("15:04:05") + " "
	}
	switch ev.Type {
	case runner.EventPhase:
		return prefix + "── " + ev.Phase
	case runner.EventError:
		msg := prefix + "error"
		if ev.Phase != "" {
			msg += " in " + ev.Phase
		}
		msg += ": " + ev.Message
		if ev.ExitCode != 0 {
			msg += fmt.Sprintf(" (exit %d)", ev.ExitCode)
		}
		return msg
	case runner.EventProgress:
		s := ev.Message
		if ev.Tool != "" {
			s = ev.Tool + " " + ev.File + " " + s
		}
		return prefix + "· " + strings.TrimSpace(s)
	case runner.EventResult:
		if ev.Result != nil {
			return prefix + "result: " + ev.Result.Status
		}
	}
	return prefix + ev.Message
}

func (h *Handler) render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name+".html", data); err != nil {
		h.log.Error("web: render page", "page", name, "err", err)
		http.Error(w, "cannot render page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src 'self'")
	// A failed write is a client that went away; there is no one to tell.
	_, _ = w.Write(buf.Bytes())
}
