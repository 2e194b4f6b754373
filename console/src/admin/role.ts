// The signed-in admin's role, in memory with the session. Viewers see no mutating
// controls (the API refuses them with 403 as well).
let role: string | null = null;
export function setRole(r: string | null) {
  role = r;
}
export function canWrite() {
  return role === "admin" || role === "owner";
}
