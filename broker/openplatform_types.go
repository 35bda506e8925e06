package broker

import (
	"errors"
	"time"
)

// The Open Platform (third-party platform) names shared by the engine
// (Broker.Platform) and its HTTP consumers (broker/api): the answers of the
// authorizer routes and the errors they map to status codes. They live in
// the catalog room so that every room above may use them.

// Authorizer is one account (official account or mini program) that
// authorized a component, as the authorizer list shows it. It never holds
// the authorizer's refresh token.
type Authorizer struct {
	AppID        string    `json:"authorizer_appid"`
	State        string    `json:"state"`               // "active", "needs_reauthorization", "revoked"
	ExpiresAt    time.Time `json:"expires_at,omitzero"` // of the current access token
	LastError    string    `json:"last_error,omitempty"`
	AuthorizedAt time.Time `json:"authorized_at,omitzero"`
	Source       string    `json:"source"` // "event", "import", "recovered"
}

// RefreshTokenEntry is one authorizer's refresh token, as imported from an
// SDK's cache or exported for a migration (admin only).
type RefreshTokenEntry struct {
	AuthorizerAppID string `json:"authorizer_appid"`
	RefreshToken    string `json:"authorizer_refresh_token"`
}

// ImportResult says what an import did: entries stored or replaced,
// entries already stored as given, and entries refused with the reason.
type ImportResult struct {
	Imported  int             `json:"imported"`
	Unchanged int             `json:"unchanged"`
	Rejected  []ImportProblem `json:"rejected,omitempty"`
}

// ImportProblem is one refused import entry. Problem never quotes the
// refresh token.
type ImportProblem struct {
	AuthorizerAppID string `json:"authorizer_appid"`
	Problem         string `json:"problem"`
}

// Errors of the Open Platform read paths (ErrNoToken, ErrForceLimited and
// ErrNotConfirmed keep their meaning).
var (
	// ErrUnknownComponent: the namespace configures no such component.
	ErrUnknownComponent = errors.New("broker: unknown namespace or component_appid")
	// ErrUnknownAuthorizer: the account never authorized the component and
	// was not imported.
	ErrUnknownAuthorizer = errors.New("broker: unknown authorizer of this component")
	// ErrRevoked: the account revoked its authorization (unauthorized
	// event); it must authorize again.
	ErrRevoked = errors.New("broker: the authorizer revoked its authorization")
	// ErrNeedsReauthorization: WeChat refused the authorizer's refresh
	// token (61023); only a new authorization brings it back.
	ErrNeedsReauthorization = errors.New("broker: the authorizer needs re-authorization (refresh token refused)")
)
