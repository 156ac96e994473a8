package fingerprint

import "github.com/denisbrodbeck/machineid"

func protectedID(appID string) (string, error) { return machineid.ProtectedID(appID) }
