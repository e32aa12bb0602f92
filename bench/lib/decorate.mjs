// Applying TypeScript-style decorators from plain JavaScript, so that benchmark apps need no compile step.
// Each helper does what `tsc` emits for `experimentalDecorators` + `emitDecoratorMetadata`.
import 'reflect-metadata';

/**
 * Class decorators, listed top to bottom as they would be written in TypeScript.
 * `paramtypes` is what `emitDecoratorMetadata` would emit for the constructor (DI tokens by position).
 */
export function decorateClass(Cls, decorators, paramtypes = []) {
  Reflect.defineMetadata('design:paramtypes', paramtypes, Cls);
  let target = Cls;
  for (const decorator of [...decorators].reverse()) target = decorator(target) ?? target;
  return target;
}

/** Method decorators on `Cls.prototype[name]`, listed top to bottom as they would be written. */
export function decorateMethod(Cls, name, decorators, paramtypes = []) {
  const proto = Cls.prototype;
  Reflect.defineMetadata('design:paramtypes', paramtypes, proto, name);
  let descriptor = Object.getOwnPropertyDescriptor(proto, name);
  for (const decorator of [...decorators].reverse()) {
    descriptor = decorator(proto, name, descriptor) ?? descriptor;
  }
  Object.defineProperty(proto, name, descriptor);
}

/** A parameter decorator on a method's parameter (`name`) or on a constructor's (`name` undefined). */
export function decorateParam(Cls, name, index, decorator) {
  decorator(name === undefined ? Cls : Cls.prototype, name, index);
}
