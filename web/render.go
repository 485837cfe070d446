package web

import (
	"bytes"
	"html/template"
	"net/http"
	"time"
)

var pages = []string{"home", "tokens", "consent", "created", "reauth", "logout", "error", "outbox", "message"}

func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"date": func(t time.Time) string {
			if t.IsZero() {
				return "never"
			}
			return t.UTC().Format("2006-01-02 15:04 UTC")
		},
		"day": func(t time.Time) string { return t.UTC().Format("2006-01-02") },
		"has": func(list []string, s string) bool {
			for _, x := range list {
				if x == s {
					return true
				}
			}
			return false
		},
	}
	out := make(map[string]*template.Template, len(pages))
	for _, p := range append(pages, setupPages...) {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return nil, err
		}
		out[p] = t
	}
	return out, nil
}

// render writes a page; a template error becomes a 500 rather than half a
// page.
func (a *app) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	p.Dev = a.cfg.OutboxDir != ""
	var buf bytes.Buffer
	if err := a.tmpl[name].Execute(&buf, p); err != nil {
		a.log.Error("web: render", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func (a *app) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s, _ := a.session(r)
	a.render(w, r, status, "error", page{Session: s, Status: status, Title: http.StatusText(status), Message: msg})
}
