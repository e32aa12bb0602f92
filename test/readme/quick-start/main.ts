// The README's quick start main.ts, verbatim between the region markers. test/readme.e2e-spec.ts imports this
// file (which starts the app on PORT), checks that it listens for SIGTERM, emits SIGTERM and checks that the
// request in flight is answered 503 and the app closes: the shutdown story depends on enableShutdownHooks().
// #region main
// main.ts
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module.js';

async function bootstrap() {
  const app = await NestFactory.create(AppModule);
  // SIGTERM (a container being stopped) and Ctrl+C now run app.close(): requests in flight are cancelled.
  app.enableShutdownHooks();
  await app.listen(process.env.PORT ?? 3000);
}
bootstrap();
// #endregion main
