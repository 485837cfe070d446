package web

import (
	"errors"
	"net/http"
	"os"

	"github.com/go-chi/chi/v5"

	"github.com/smtpgate/smtpgate/outbox"
)

// The Outbox pages show what the development upstream received, so a
// person trying smtpgate sees the whole path work. They exist only when
// Config.OutboxDir is set, which "smtpgate dev" does.

func (a *app) outboxList(w http.ResponseWriter, r *http.Request) {
	msgs, err := outbox.List(a.cfg.OutboxDir)
	if err != nil {
		a.log.Error("web: list outbox", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "The outbox cannot be read.")
		return
	}
	s, _ := a.session(r)
	a.render(w, r, http.StatusOK, "outbox", page{Session: s, Outbox: msgs})
}

func (a *app) outboxMessage(w http.ResponseWriter, r *http.Request) {
	m, err := outbox.Read(a.cfg.OutboxDir, chi.URLParam(r, "id"))
	if errors.Is(err, os.ErrNotExist) {
		a.fail(w, r, http.StatusNotFound, "There is no such message.")
		return
	}
	if err != nil {
		a.log.Error("web: read outbox", "err", err)
		a.fail(w, r, http.StatusInternalServerError, "The message cannot be read.")
		return
	}
	s, _ := a.session(r)
	a.render(w, r, http.StatusOK, "message", page{Session: s, Message: string(m.Raw), Outbox: []outbox.Message{*m}})
}
