package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
)

// Admin is what the admin routes act on besides the TokenSource: the
// process's configuration reload and the leader's stopped refreshes.
// Implementations must be safe for concurrent use.
type Admin interface {
	// Reload re-reads the configuration file and applies it; an invalid
	// file changes nothing and the error lists every problem (an error
	// wrapping *config.ValidationError).
	Reload(ctx context.Context) error
	// Resume makes a refresh whose retries stopped try again at once
	// (broker.Broker.Resume).
	Resume(ctx context.Context, ns, appid string) error
}

// ErrNoConfigFile is what an Admin's Reload returns (wrapped) in a process
// whose configuration does not come from a file; the route answers 404.
var ErrNoConfigFile = errors.New("api: no configuration file to reload")

var errNoAdmin = &apiError{http.StatusNotFound, codeNotFound, "this process does not reload (no configuration file)"}

// adminRoutes are the routes for admin clients: the status, the
// configuration reload and the resume of a stopped refresh.
type adminRoutes struct {
	*desk
	status func(ctx context.Context) broker.Status // TokenSource.Status
	adm    Admin                                   // nil: reload and resume answer 404
	log    *zap.Logger
}

// routes registers the group's routes.
func (ar *adminRoutes) routes(add addFunc) {
	add(http.MethodGet, "/v1/status", ar.getStatus)
	add(http.MethodPost, "/v1/admin/reload", ar.adminReload)
	add(http.MethodPost, "/v1/admin/namespaces/:ns/apps/:appid/resume", ar.adminResume)
}

// getStatus serves GET /v1/status to admin clients.
func (ar *adminRoutes) getStatus(c echo.Context) error {
	if _, err := ar.admin(c); err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, ar.status(c.Request().Context()))
}

// adminReload serves POST /v1/admin/reload: the same reload as SIGHUP, on
// this replica only (every replica reloads on its own signal or request).
func (ar *adminRoutes) adminReload(c echo.Context) error {
	if _, err := ar.admin(c); err != nil {
		return err
	}
	if ar.adm == nil {
		return errNoAdmin
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	if err := ar.adm.Reload(c.Request().Context()); err != nil {
		if errors.Is(err, ErrNoConfigFile) {
			return errNoAdmin
		}
		// The problems name keys and masked values, never a secret.
		var ve *config.ValidationError
		msg := "reload failed; the running configuration is unchanged (see the log)"
		if errors.As(err, &ve) {
			msg = "reload refused; the running configuration is unchanged: " + ve.Error()
		}
		return &apiError{http.StatusBadRequest, codeBadRequest, msg}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "reloaded"})
}

// adminResume serves POST /v1/admin/namespaces/{ns}/apps/{appid}/resume.
func (ar *adminRoutes) adminResume(c echo.Context) error {
	cl, err := ar.admin(c)
	if err != nil {
		return err
	}
	if ar.adm == nil {
		return errNoAdmin
	}
	ns, appid := c.Param("ns"), c.Param("appid")
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	err = ar.adm.Resume(c.Request().Context(), ns, appid)
	switch {
	case errors.Is(err, broker.ErrNotStopped):
		return c.JSON(http.StatusOK, map[string]string{"status": "not stopped"})
	case err != nil:
		return err
	}
	ar.log.Info("refresh resume requested", zap.String("client", cl.name), zap.String("namespace", ns), zap.String("appid", appid))
	return c.JSON(http.StatusAccepted, map[string]string{"status": "resume requested"})
}
