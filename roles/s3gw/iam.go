package s3gw

import (
	"github.com/versity/versitygw/auth"
	"github.com/versity/versitygw/s3err"
)

// iam is versitygw's account store over the configured keys: fixed at
// start, so the admin API's user management is refused. Every account
// has the admin role, which turns off versitygw's own bucket ACLs and
// policies: dfs decides what each key's user may do.
type iam struct {
	accounts map[string]auth.Account
}

var _ auth.IAMService = (*iam)(nil)

func newIAM(keys []Key) *iam {
	m := make(map[string]auth.Account, len(keys))
	for _, k := range keys {
		m[k.Access] = auth.Account{Access: k.Access, Secret: k.Secret, Role: auth.RoleAdmin}
	}
	return &iam{accounts: m}
}

func (i *iam) GetUserAccount(access string) (auth.Account, error) {
	a, ok := i.accounts[access]
	if !ok {
		return auth.Account{}, auth.ErrNoSuchUser
	}
	return a, nil
}

func (i *iam) ResolveAccounts(keys []string) ([]string, error) {
	missing := []string{}
	for _, k := range keys {
		if _, ok := i.accounts[k]; !ok {
			missing = append(missing, k)
		}
	}
	return missing, nil
}

func (i *iam) ListUserAccounts() ([]auth.Account, error) {
	out := make([]auth.Account, 0, len(i.accounts))
	for _, a := range i.accounts {
		a.Secret = ""
		out = append(out, a)
	}
	return out, nil
}

func (i *iam) CreateAccount(auth.Account) error { return notSupported() }

func (i *iam) UpdateUserAccount(string, auth.MutableProps) error { return notSupported() }

func (i *iam) DeleteUserAccount(string) error { return notSupported() }

func (i *iam) Shutdown() error { return nil }

// notSupported is the answer to the admin API's user management: keys
// come from the gateway's configuration.
func notSupported() error { return s3err.GetAPIError(s3err.ErrAdminMethodNotSupported) }
